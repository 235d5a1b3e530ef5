"""Bi-level routing attention (BRA), the core of BiFormer (Zhu et al., CVPR 2023, arXiv:2303.08810).

The map is cut into ``n_win x n_win`` regions. Region-level routing: the mean query and mean key of every region
(from *detached* q and k, over all heads) give region-to-region affinities, and each query region keeps the
``topk`` key regions of highest affinity, the same for every head. Token-level attention: every query of a region
attends to all tokens of its routed regions (``topk * region_size`` keys).

Three paths compute the token-level attention for the same routing:

* ``'triton'`` (:mod:`.triton`): one program per (query region, batch, head) reads its routed key/value regions in
  place by address arithmetic, with an online softmax; the backward kernel recomputes the probabilities and adds
  the key/value gradients of every routed region with atomics. Picked for CUDA tensors when Triton imports. Given
  CPU tensors (``backend='triton'``) the kernels run in Triton's interpreter: slow, for tests.
* ``'torch'`` (:mod:`.torch`): chunks of query regions with an index gather, and a hand-written backward that
  recomputes each chunk and scatters the key/value gradients with ``index_add_``; nothing of the routed copies is
  kept between forward and backward. When a quarter or more of the regions are routed, dense attention over the
  map with a routing mask on PyTorch's fused attention kernel instead. The CPU path.
* ``'reference'`` (:mod:`.reference`): the official formulation (``torch.gather`` of the routed regions from an
  expanded view, autograd backward); for tests and benchmarks.

Choice of path: the ``backend`` argument if given, else the environment variable ``VISIONZOO_BRA_BACKEND``
(``triton``, ``torch``, ``reference`` or ``auto``), else ``auto`` (Triton for CUDA tensors when available, PyTorch
otherwise).
"""
import numbers
from typing import Optional, Tuple

import torch as _torch  # ``torch`` names the sibling module .torch in this package
import torch.nn.functional as _F

from .._dispatch import pick_backend, triton_path
from .reference import routing_attention_reference
from .torch import routing_attention_torch

__all__ = ['routing_attention', 'region_routing', 'region_size', 'BACKENDS', 'ENV_BACKEND']

BACKENDS = ('auto', 'triton', 'torch', 'reference')
ENV_BACKEND = 'VISIONZOO_BRA_BACKEND'
_FLOATS = (_torch.float16, _torch.bfloat16, _torch.float32, _torch.float64)
_LAYOUT = '(batch, height, width, heads, dim)'


def _triton():
    """The Triton path module, imported on first use (None when Triton is not installed)."""
    return triton_path(__name__)


def triton_available() -> bool:
    """Whether the Triton path can be imported."""
    return _triton() is not None


def region_size(height: int, width: int, n_win: int) -> Tuple[int, int]:
    """Tokens per region along each side: the map is padded (bottom, right) to ``n_win`` times this."""
    return -(-height // n_win), -(-width // n_win)


@_torch.no_grad()
def region_routing(q: _torch.Tensor, k: _torch.Tensor, n_win: int, topk: int, scale: float) -> _torch.Tensor:
    """The ``topk`` key regions of every query region: (batch, n_win**2, topk) int64, regions row-major.

    Region descriptors are the means of q and k (detached, all heads together) over each region of the map
    zero-padded to ``n_win`` regions per side (padding counted in the mean, as the official ``auto_pad``); the
    affinity of query region i and key region j is ``(scale * q_i) . k_j``.
    """
    batch, height, width = q.shape[:3]
    rh, rw = region_size(height, width, n_win)
    cdt = _torch.float64 if q.dtype == _torch.float64 else _torch.float32

    def means(x):  # summed one axis at a time: much faster than .mean((2, 4)) on CPU
        x = _F.pad(x.reshape(batch, height, width, -1).to(cdt), (0, 0, 0, n_win * rw - width, 0, n_win * rh - height))
        x = x.view(batch, n_win, rh, n_win, rw, -1).sum(4).sum(2)
        return x.div_(rh * rw).view(batch, n_win * n_win, -1)

    affinity = (means(q) * scale) @ means(k).transpose(1, 2)
    return _torch.topk(affinity, topk, dim=-1).indices


def _validate(q, k, v, n_win, topk, scale):
    for name, t in (('q', q), ('k', k), ('v', v)):
        if not isinstance(t, _torch.Tensor):
            raise ValueError(f'{name} must be a torch.Tensor, got {type(t).__name__}')
        if t.dim() != 5 or min(t.shape) < 1:
            raise ValueError(f'{name} must have shape {_LAYOUT} with every size >= 1, got {tuple(t.shape)}')
        if t.is_complex() or t.dtype not in _FLOATS:
            raise ValueError(f'{name} must have a real floating dtype (float16, bfloat16, float32 or float64), '
                             f'got {t.dtype}')
    if k.shape != q.shape:
        raise ValueError(f'k must have the shape of q {tuple(q.shape)} {_LAYOUT}, got {tuple(k.shape)}')
    if v.shape[:4] != q.shape[:4]:
        raise ValueError(f'v must have the batch, height, width and heads of q {tuple(q.shape[:4])}, '
                         f'got {tuple(v.shape)}')
    for name, t in (('k', k), ('v', v)):
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f'{name} must have the dtype and device of q ({q.dtype}, {q.device}), '
                             f'got ({t.dtype}, {t.device})')
    if not isinstance(n_win, numbers.Integral) or isinstance(n_win, bool) or n_win < 1:
        raise ValueError(f'n_win must be an int >= 1 (regions per side), got {n_win!r}')
    if not isinstance(topk, numbers.Integral) or isinstance(topk, bool) or not 1 <= topk <= n_win * n_win:
        raise ValueError(f'topk must be an int in [1, n_win**2 = {n_win * n_win}], got {topk!r}')
    if scale is None:
        return (q.shape[-2] * q.shape[-1]) ** -0.5
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool) or not scale > 0:
        raise ValueError(f'scale must be a positive real number or None, got {scale!r}')
    return float(scale)


def routing_attention(q: _torch.Tensor, k: _torch.Tensor, v: _torch.Tensor, n_win: int, topk: int,
                      scale: Optional[float] = None, *, backend: Optional[str] = None) -> _torch.Tensor:
    """Bi-level routing attention of BiFormer: region routing, then attention over the routed regions' tokens.

    The map (height x width) is zero-padded at the bottom and right to ``n_win`` regions of
    ``ceil(height / n_win) x ceil(width / n_win)`` tokens per side; padded tokens are ordinary zero tokens (counted
    in the region means, and keys with logit 0 and value 0, as in the official code), and the outputs of padded
    queries are dropped. Routing (:func:`region_routing`) is not differentiable. Logits are ``scale * q . k`` with,
    by default, ``scale = (heads * dim_qk) ** -0.5`` of the *full* query/key width (the official BiFormer
    convention, not per head).

    Math runs in float32 (float64 for float64 inputs); the output has ``q``'s dtype. Differentiable in q, k and v.

    Args:
        q, k: (batch, height, width, heads, dim_qk), heads-last; any strides (e.g. views of a qkv projection).
        v: (batch, height, width, heads, dim_v).
        n_win: regions per side (7 in BiFormer's ImageNet models; 16 / 8 in its detection / segmentation configs).
        topk: routed key regions per query region, 1 .. n_win**2 (n_win**2 = full attention over the padded map).
        scale: logit scale; None means ``(heads * dim_qk) ** -0.5``.
        backend: ``'auto'``, ``'triton'``, ``'torch'`` or ``'reference'``; None reads ``VISIONZOO_BRA_BACKEND``.

    Returns:
        (batch, height, width, heads, dim_v) tensor of ``q``'s dtype.

    Raises:
        ValueError: a wrong shape, dtype, device, ``n_win``, ``topk``, scale or backend (the message names the
            argument).
        RuntimeError: ``backend='triton'`` without Triton, or on CPU tensors without ``TRITON_INTERPRET=1``.
    """
    scale = _validate(q, k, v, n_win, topk, scale)
    name = pick_backend(backend, ENV_BACKEND, BACKENDS, q, 'q', triton_available)
    with _torch.autocast(q.device.type, enabled=False):  # every path picks its own precision (see above)
        index = region_routing(q, k, n_win, topk, scale)
        if name == 'triton':
            return _triton().routing_attention_triton(q, k, v, index, n_win, scale)
        if name == 'torch':
            return routing_attention_torch(q, k, v, index, n_win, scale)
        return routing_attention_reference(q, k, v, index, n_win, scale)
