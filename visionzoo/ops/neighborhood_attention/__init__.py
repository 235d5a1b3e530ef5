"""Neighbourhood attention (NA, and dilated NA) with the semantics of NATTEN 0.21's ``na1d``/``na2d``/``na3d``,
plus the relative position bias of the NAT/DiNAT checkpoints.

Three paths compute the same function:

* ``'triton'`` (:mod:`.triton`): fused forward and backward kernels with an online softmax; the attention weights
  never reach memory. Picked for CUDA tensors when Triton imports. Given CPU tensors (``backend='triton'``) the
  same kernels run in Triton's interpreter: slow, for tests.
* ``'torch'`` (:mod:`.torch`): tiles of queries with the key block of their neighbourhoods, forward and a
  hand-written backward that recomputes per tile; memory bounded by a chunk of tiles. The CPU path.
* ``'reference'`` (:mod:`.reference`): dense attention with a boolean (N, N) mask; for tests.

Choice of path: the ``backend`` argument if given, else the environment variable ``VISIONZOO_NA_BACKEND``
(``triton``, ``torch``, ``reference`` or ``auto``), else ``auto`` (Triton for CUDA tensors when available, PyTorch
otherwise).
"""
import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import torch as _torch  # ``torch`` names the sibling module .torch in this package

from ...utils.errors import ArgumentError
from .._dispatch import pick_backend, triton_path
from .reference import neighborhood_attention_reference
from .torch import neighborhood_attention_torch

__all__ = ['neighborhood_attention', 'BACKENDS', 'ENV_BACKEND']

BACKENDS = ('auto', 'triton', 'torch', 'reference')
ENV_BACKEND = 'VISIONZOO_NA_BACKEND'
_FLOATS = (_torch.float16, _torch.bfloat16, _torch.float32, _torch.float64)
_LAYOUTS = {1: '(batch, length, heads, dim)', 2: '(batch, x, y, heads, dim)', 3: '(batch, x, y, z, heads, dim)'}


def _triton():
    """The Triton path module, imported on first use (None when Triton is not installed)."""
    return triton_path(__name__)


def triton_available() -> bool:
    """Whether the Triton path can be imported."""
    return _triton() is not None


def _rank_hint(q_shape: tuple, rank: int, other_rank) -> str:
    """Why a per-axis argument for ``other_rank`` spatial axes does not fit ``q`` (the rank comes from q.dim())."""
    if other_rank not in _LAYOUTS or other_rank == rank:
        return ''
    missing = ' (is the heads axis missing?)' if other_rank > rank else ''
    return (f'; q of shape {q_shape} is {rank}-D attention {_LAYOUTS[rank]}, {other_rank}-D attention takes q of '
            f'shape {_LAYOUTS[other_rank]}{missing}')


def _per_axis(name: str, value, rank: int, kind: type, minimum: Optional[int] = None, q_shape: tuple = ()) -> tuple:
    """``value`` (one for every axis, or a tuple of ``rank``) as a tuple, validated (ValueError naming ``name``)."""
    what = 'a bool' if kind is bool else f'an int >= {minimum}'
    values = tuple(value) if isinstance(value, Sequence) else (value,) * rank
    ok = len(values) == rank and all(
        isinstance(x, bool) if kind is bool else
        (isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= minimum) for x in values)
    if not ok:
        hint = _rank_hint(q_shape, rank, len(values)) if isinstance(value, Sequence) else ''
        raise ArgumentError(f'{name} must be {what} or a tuple of {rank} such values (one per spatial axis), '
                            f'got {value!r}{hint}')
    return tuple(kind(x) for x in values)


def _validate(q, k, v, kernel_size, dilation, is_causal, rpb, scale):
    """Per-axis (kernel, dilation, causal) and the scale; ValueError naming the first bad argument."""
    for name, t in (('q', q), ('k', k), ('v', v)):
        if not isinstance(t, _torch.Tensor):
            raise ValueError(f'{name} must be a torch.Tensor, got {type(t).__name__}')
    if q.dim() - 3 not in _LAYOUTS:
        raise ValueError(f'q must have 4, 5 or 6 dimensions ({" or ".join(_LAYOUTS.values())}), '
                         f'got shape {tuple(q.shape)}')
    rank = q.dim() - 3
    if min(q.shape) < 1:
        raise ValueError(f'q must have shape {_LAYOUTS[rank]} with every size >= 1, got {tuple(q.shape)}')
    for name, t in (('q', q), ('k', k), ('v', v)):
        if t.is_complex() or t.dtype not in _FLOATS:
            raise ValueError(f'{name} must have a real floating dtype (float16, bfloat16, float32 or float64), '
                             f'got {t.dtype}')
    for name, t in (('k', k), ('v', v)):
        if t.shape != q.shape:
            raise ValueError(f'{name} must have the shape of q {tuple(q.shape)} {_LAYOUTS[rank]}, '
                             f'got {tuple(t.shape)}')
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f'{name} must have the dtype and device of q ({q.dtype}, {q.device}), '
                             f'got ({t.dtype}, {t.device})')
    kernel = _per_axis('kernel_size', kernel_size, rank, int, 1, tuple(q.shape))
    dil = _per_axis('dilation', dilation, rank, int, 1, tuple(q.shape))
    causal = _per_axis('is_causal', is_causal, rank, bool, q_shape=tuple(q.shape))
    spatial = tuple(q.shape[1:1 + rank])
    for axis, (n, ks, d) in enumerate(zip(spatial, kernel, dil)):
        if ks * d > n:
            raise ValueError(f'kernel_size * dilation must not exceed the input size on any axis: axis {axis} has '
                             f'size {n} < kernel_size {ks} * dilation {d} (q has shape {tuple(q.shape)})')
    if rpb is not None:
        expected = (q.shape[-2],) + tuple(2 * ks - 1 for ks in kernel)
        if not isinstance(rpb, _torch.Tensor):
            raise ValueError(f'rpb must be a torch.Tensor of shape (heads, 2k-1, ...)={expected}, '
                             f'got {type(rpb).__name__}')
        if tuple(rpb.shape) != expected:
            raise ArgumentError(f'rpb must have shape (heads, 2k-1, ...)={expected}, got {tuple(rpb.shape)}'
                                + _rank_hint(tuple(q.shape), rank, rpb.dim() - 1))
        if rpb.is_complex() or rpb.dtype not in _FLOATS:
            raise ValueError(f'rpb must have a real floating dtype, got {rpb.dtype}')
        if rpb.device != q.device:
            raise ValueError(f'rpb must be on the device of q ({q.device}), got {rpb.device}')
    if scale is None:
        scale = q.shape[-1] ** -0.5
    elif not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise ArgumentError(f'scale must be a real number or None, got {scale!r}')
    elif not math.isfinite(scale):
        raise ArgumentError(f'scale must be a finite real number or None, got {scale!r}')
    return kernel, dil, causal, float(scale)


def neighborhood_attention(q: _torch.Tensor, k: _torch.Tensor, v: _torch.Tensor,
                           kernel_size: Union[int, Tuple[int, ...]], dilation: Union[int, Tuple[int, ...]] = 1,
                           is_causal: Union[bool, Tuple[bool, ...]] = False, rpb: Optional[_torch.Tensor] = None,
                           scale: Optional[float] = None, *, backend: Optional[str] = None) -> _torch.Tensor:
    """Neighbourhood attention over 1, 2 or 3 spatial axes, as ``natten.functional.na1d/na2d/na3d`` (0.21).

    Each query attends to the ``prod(kernel_size)`` keys of its neighbourhood, per axis of length ``n`` with
    kernel ``k`` and dilation ``d``:

    * dilation splits the axis into ``d`` interleaved groups (``i % d``) and attention stays within a group; in
      group coordinates ``i' = i // d`` a group holds ``L_g = ceil((n - g) / d)`` positions;
    * non-causal axes: keys ``start .. start + k - 1`` with ``start = clamp(i' - k // 2, 0, L_g - k)`` (the window
      shifts to stay inside at the borders; even kernels see ``k/2`` keys before, ``k/2 - 1`` after);
    * causal axes: keys ``i' - k < j' <= i'`` (no shift; fewer than ``k`` near the start);
    * ``rpb`` adds ``rpb[h, (j'_x - i'_x) + k_x - 1, (j'_y - i'_y) + k_y - 1]`` (group coordinates, NAT/DiNAT's
      convention) to the logit of key j for query i, before the softmax.

    Logits are ``scale * q . k``. Math runs in float32 (float64 for float64 inputs); the output has ``q``'s dtype.
    Differentiable in ``q``, ``k``, ``v`` and ``rpb``. No path builds a positions x positions matrix except
    ``'reference'``.

    Args:
        q, k, v: heads-last tensors of one shape: (batch, length, heads, dim) in 1-D, (batch, x, y, heads, dim)
            in 2-D, (batch, x, y, z, heads, dim) in 3-D; one floating dtype and device.
        kernel_size: window size per axis (int, or a tuple with one int >= 1 per spatial axis).
        dilation: per-axis dilation (int or tuple, >= 1); ``kernel_size * dilation`` must not exceed the axis.
        is_causal: per-axis causal flag (bool or tuple of bools).
        rpb: optional relative position bias (heads, 2k-1) / (heads, 2k_x-1, 2k_y-1) / (..., 2k_z-1).
        scale: logit scale; None means ``dim ** -0.5``.
        backend: ``'auto'``, ``'triton'``, ``'torch'`` or ``'reference'``; None reads ``VISIONZOO_NA_BACKEND``.

    Returns:
        Tensor of ``q``'s shape and dtype.

    Raises:
        ValueError: a wrong shape, dtype, device, kernel size, dilation, causal flag, bias, scale or backend (the
            message names the argument).
        RuntimeError: ``backend='triton'`` without Triton, or on CPU tensors without ``TRITON_INTERPRET=1``.
    """
    kernel, dil, causal, scale = _validate(q, k, v, kernel_size, dilation, is_causal, rpb, scale)
    name = pick_backend(backend, ENV_BACKEND, BACKENDS, q, 'q', triton_available)
    if name == 'triton':
        return _triton().neighborhood_attention_triton(q, k, v, kernel, dil, causal, rpb, scale)
    if name == 'torch':
        return neighborhood_attention_torch(q, k, v, kernel, dil, causal, rpb, scale)
    return neighborhood_attention_reference(q, k, v, kernel, dil, causal, rpb, scale)
