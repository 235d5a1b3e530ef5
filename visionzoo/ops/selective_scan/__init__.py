"""Selective scan (Mamba-1 "S6"), with the semantics of ``mamba_ssm``'s ``selective_scan_fn``.

Three paths compute the same function:

* ``'triton'`` (:mod:`.triton`): forward and backward Triton kernels, chunked over the sequence, keeping only
  chunk-boundary states and recomputing inside a chunk in the backward pass. Picked for CUDA tensors when Triton
  imports. Given CPU tensors (``backend='triton'``) the same kernels run in Triton's interpreter: slow, for tests.
* ``'torch'`` (:mod:`.torch`): vectorised chunked scan in PyTorch with a hand-written backward; the CPU path.
* ``'reference'`` (:mod:`.reference`): a plain sequential loop differentiated by autograd; for tests.

Choice of path: the ``backend`` argument if given, else the environment variable ``VISIONZOO_SCAN_BACKEND``
(``triton``, ``torch``, ``reference`` or ``auto``), else ``auto`` (Triton for CUDA tensors when available, PyTorch
otherwise).
"""
from typing import Optional, Tuple, Union

import torch as _torch  # ``torch`` names the sibling module .torch in this package

from .._dispatch import pick_backend, triton_path
from .reference import selective_scan_reference
from .torch import selective_scan_torch


__all__ = ['selective_scan', 'selective_scan_bidirectional', 'BACKENDS', 'ENV_BACKEND']

BACKENDS = ('auto', 'triton', 'torch', 'reference')
ENV_BACKEND = 'VISIONZOO_SCAN_BACKEND'
_FLOATS = (_torch.float16, _torch.bfloat16, _torch.float32, _torch.float64)

def _triton():
    """The Triton path module, imported on first use (None when Triton is not installed)."""
    return triton_path(__name__)


def triton_available() -> bool:
    """Whether the Triton path can be imported."""
    return _triton() is not None


def _shape(t: _torch.Tensor) -> str:
    return '(' + ', '.join(str(s) for s in t.shape) + ')'


def _check_tensor(name: str, t, expected: Tuple[int, ...], what: str, device: _torch.device) -> None:
    if not isinstance(t, _torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor of shape {what}={expected}, got {type(t).__name__}')
    if t.is_complex():
        raise ValueError(f'{name} must be real (complex values are not supported), got dtype {t.dtype}')
    if t.dtype not in _FLOATS:
        raise ValueError(f'{name} must have a floating dtype (float16, bfloat16, float32 or float64), got {t.dtype}')
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f'{name} must have shape {what}={expected}, got {_shape(t)}')
    if t.device != device:
        raise ValueError(f'{name} must be on the same device as u ({device}), got {t.device}')


def _check_bc(name: str, X, batch: int, dim: int, dstate: int, seqlen: int, device: _torch.device) -> None:
    what = (f'(dim, dstate)={(dim, dstate)}, (batch, dstate, seqlen)={(batch, dstate, seqlen)} or '
            f'(batch, groups, dstate, seqlen)=({batch}, groups, {dstate}, {seqlen}) with dim % groups == 0')
    if not isinstance(X, _torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor of shape {what}, got {type(X).__name__}')
    if X.dim() == 2:
        _check_tensor(name, X, (dim, dstate), '(dim, dstate)', device)
    elif X.dim() == 3:
        _check_tensor(name, X, (batch, dstate, seqlen), '(batch, dstate, seqlen)', device)
    elif X.dim() == 4:
        groups = X.shape[1]
        if groups < 1 or dim % groups != 0:
            raise ValueError(f'{name}: dim={dim} must be divisible by groups={groups} '
                             f'({name} has shape {_shape(X)}, expected (batch, groups, dstate, seqlen))')
        _check_tensor(name, X, (batch, groups, dstate, seqlen), '(batch, groups, dstate, seqlen)', device)
    else:
        raise ValueError(f'{name} must have shape {what}; got {X.dim()} dimensions {_shape(X)}')


def _validate(u, delta, A, B, C, D, z, delta_bias) -> None:
    """Raise ValueError/TypeError naming the first argument whose shape, dtype or device is wrong."""
    if not isinstance(u, _torch.Tensor):
        raise TypeError(f'u must be a torch.Tensor of shape (batch, dim, seqlen), got {type(u).__name__}')
    if u.dim() != 3:
        raise ValueError(f'u must have shape (batch, dim, seqlen), got {_shape(u)}')
    batch, dim, seqlen = u.shape
    if min(batch, dim, seqlen) < 1:
        raise ValueError(f'u must have shape (batch, dim, seqlen) with every size >= 1, got {_shape(u)}')
    device = u.device
    _check_tensor('u', u, (batch, dim, seqlen), '(batch, dim, seqlen)', device)
    _check_tensor('delta', delta, (batch, dim, seqlen), '(batch, dim, seqlen)', device)
    if not isinstance(A, _torch.Tensor):
        raise TypeError(f'A must be a torch.Tensor of shape (dim, dstate), got {type(A).__name__}')
    if A.dim() != 2 or A.shape[0] != dim or A.shape[1] < 1:
        raise ValueError(f'A must have shape (dim, dstate)=({dim}, dstate), got {_shape(A)}')
    dstate = A.shape[1]
    _check_tensor('A', A, (dim, dstate), '(dim, dstate)', device)
    _check_bc('B', B, batch, dim, dstate, seqlen, device)
    _check_bc('C', C, batch, dim, dstate, seqlen, device)
    if D is not None:
        _check_tensor('D', D, (dim,), '(dim,)', device)
    if z is not None:
        _check_tensor('z', z, (batch, dim, seqlen), '(batch, dim, seqlen)', device)
    if delta_bias is not None:
        _check_tensor('delta_bias', delta_bias, (dim,), '(dim,)', device)


def _run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend):
    _validate(u, delta, A, B, C, D, z, delta_bias)
    name = pick_backend(backend, ENV_BACKEND, BACKENDS, u, 'u', triton_available)
    if name == 'triton':
        return _triton().selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    if name == 'torch':
        return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, True, reverse)


def selective_scan(u: _torch.Tensor, delta: _torch.Tensor, A: _torch.Tensor, B: _torch.Tensor, C: _torch.Tensor,
                   D: Optional[_torch.Tensor] = None, z: Optional[_torch.Tensor] = None,
                   delta_bias: Optional[_torch.Tensor] = None, delta_softplus: bool = False,
                   return_last_state: bool = False, *, reverse: bool = False,
                   backend: Optional[str] = None) -> Union[_torch.Tensor, Tuple[_torch.Tensor, _torch.Tensor]]:
    """Selective scan of Mamba-1, as ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``.

    Per batch b, channel d, state n and position t (h_{-1} = 0)::

        dt_t = delta_t + delta_bias[d]            (softplus(dt_t), threshold 20, if delta_softplus)
        h_t  = exp(dt_t * A[d, n]) * h_{t-1} + dt_t * B_t[g(d), n] * u_t
        y_t  = sum_n C_t[g(d), n] * h_t + D[d] * u_t
        out  = y * silu(z)                        (if z is given)

    with g(d) = d // (dim / groups). Math runs in float32 (float64 when ``u`` is float64); ``out`` has ``u``'s
    dtype. Gradients flow to u, delta, A, B, C, D, z and delta_bias; as in mamba, the gradient of
    ``last_state`` is not propagated.

    Args:
        u: (batch, dim, seqlen) input.
        delta: (batch, dim, seqlen) time steps.
        A: (dim, dstate) real state matrix (usually negative).
        B: (dim, dstate) constant, (batch, dstate, seqlen) variable, or (batch, groups, dstate, seqlen) grouped.
        C: same forms as ``B`` (the two may differ).
        D: optional (dim,) skip connection.
        z: optional (batch, dim, seqlen) gate.
        delta_bias: optional (dim,) added to ``delta``.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return h at the last position, (batch, dim, dstate) float32.
        reverse: scan from the last position to the first (not in mamba; equals flipping every (…, seqlen)
            input and the output).
        backend: ``'auto'``, ``'triton'``, ``'torch'`` or ``'reference'``; None reads ``VISIONZOO_SCAN_BACKEND``.

    Returns:
        ``out`` (batch, dim, seqlen), or ``(out, last_state)``.

    Raises:
        ValueError: an argument has the wrong shape, dtype or device (the message names it), or an unknown
            backend is asked for.
    """
    out, last_state = _run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend)
    return (out, last_state) if return_last_state else out


def selective_scan_bidirectional(u: _torch.Tensor, delta: _torch.Tensor, A: _torch.Tensor, B: _torch.Tensor,
                                 C: _torch.Tensor, D: Optional[_torch.Tensor] = None, z: Optional[_torch.Tensor] = None,
                                 delta_bias: Optional[_torch.Tensor] = None, delta_softplus: bool = False,
                                 divide_out: bool = True, *, backend: Optional[str] = None) -> _torch.Tensor:
    """Vision Mamba's bidirectional scan ("bimamba v2") without flipped copies.

    Direction 0 scans the sequence first to last, direction 1 last to first; each has its own inputs and
    parameters, all given in the natural token order, and both share the gate::

        out = silu(z) * (y_0 + y_1) / 2          (sum instead of mean when divide_out is False)

    with y_k = selective_scan of direction k (including its D term). Vim computes direction 1 on flipped
    tensors and flips the result back; computing that branch in the natural order instead (its convolution with
    ``causal_conv1d(..., reverse=True)``, its projections position by position) and passing it here gives the same
    output with no flipped copy. The Triton kernels read direction 1 back to front in place; the PyTorch path
    reverses it inside the time-major copy it makes anyway.

    Args:
        u, delta: (2, batch, dim, seqlen), one slice per direction.
        A: (2, dim, dstate).
        B, C: (2, dim, dstate), (2, batch, dstate, seqlen) or (2, batch, groups, dstate, seqlen).
        D, delta_bias: optional (2, dim).
        z: optional (batch, dim, seqlen) gate shared by both directions.
        delta_softplus: as in :func:`selective_scan`.
        divide_out: average the two directions (Vim's ``if_divide_out=True``) instead of summing them.
        backend: as in :func:`selective_scan`.

    Returns:
        out (batch, dim, seqlen) in ``u``'s dtype.
    """
    for name, t in (('u', u), ('delta', delta), ('A', A), ('B', B), ('C', C), ('D', D), ('delta_bias', delta_bias)):
        if t is None:
            continue
        if not isinstance(t, _torch.Tensor):
            raise TypeError(f'{name} must be a torch.Tensor with a leading direction axis of size 2')
        if t.dim() < 1 or t.shape[0] != 2:
            raise ValueError(f'{name} must have a leading direction axis of size 2 (forward, backward), '
                             f'got shape {_shape(t)}')
    outs = []
    for k in range(2):
        pick = (lambda t: None if t is None else t[k])  # noqa: E731
        out, _ = _run(u[k], delta[k], A[k], B[k], C[k], pick(D), z, pick(delta_bias), delta_softplus, k == 1,
                      backend)
        outs.append(out)
    out = outs[0] + outs[1]
    return out / 2 if divide_out else out
