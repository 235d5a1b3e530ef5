"""Causal depthwise conv1d with the semantics of the ``causal-conv1d`` package's ``causal_conv1d_fn``.

Paths: ``'torch'`` (:mod:`.torch`: PyTorch's grouped convolution on a left-padded input, oneDNN on CPU and
cuDNN on CUDA; used on every device) and ``'reference'`` (:mod:`.reference`: the definition as shifted
multiply-adds; for tests). There is no Triton kernel for this op: the grouped convolution is already one library
call, forward and backward.

Choice of path: the ``backend`` argument if given, else the environment variable ``VISIONZOO_CONV1D_BACKEND``,
else ``'torch'``.
"""
from typing import Optional

import torch as _torch  # ``torch`` names the sibling module .torch in this package

from .._dispatch import requested_backend
from .reference import causal_conv1d_reference
from .torch import causal_conv1d_torch


__all__ = ['causal_conv1d', 'BACKENDS', 'ENV_BACKEND']

BACKENDS = ('auto', 'torch', 'reference')
ENV_BACKEND = 'VISIONZOO_CONV1D_BACKEND'
_FLOATS = (_torch.float16, _torch.bfloat16, _torch.float32, _torch.float64)
_ACTIVATIONS = (None, 'silu', 'swish')


def _shape(t: _torch.Tensor) -> str:
    return '(' + ', '.join(str(s) for s in t.shape) + ')'


def _check(name: str, t, expected, what: str, device) -> None:
    if not isinstance(t, _torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor of shape {what}, got {type(t).__name__}')
    if t.is_complex() or t.dtype not in _FLOATS:
        raise ValueError(f'{name} must have a real floating dtype (float16, bfloat16, float32 or float64), '
                         f'got {t.dtype}')
    if expected is not None and tuple(t.shape) != tuple(expected):
        raise ValueError(f'{name} must have shape {what}={tuple(expected)}, got {_shape(t)}')
    if device is not None and t.device != device:
        raise ValueError(f'{name} must be on the same device as x ({device}), got {t.device}')


def causal_conv1d(x: _torch.Tensor, weight: _torch.Tensor, bias: Optional[_torch.Tensor] = None,
                  activation: Optional[str] = None, *, reverse: bool = False,
                  backend: Optional[str] = None) -> _torch.Tensor:
    """Depthwise causal convolution over the last axis, as ``causal_conv1d.causal_conv1d_fn``.

    ``out[b, d, t] = bias[d] + sum_k weight[d, k] * x[b, d, t - (width - 1) + k]`` with zeros before the start,
    followed by SiLU when ``activation`` is ``'silu'`` (or its alias ``'swish'``). Math in float32 (float64 for
    float64 ``x``); the output has ``x``'s dtype. Differentiable in ``x``, ``weight`` and ``bias``.

    Args:
        x: (batch, dim, seqlen).
        weight: (dim, width) (a Conv1d weight (dim, 1, width) must be reshaped by the caller).
        bias: optional (dim,).
        activation: None, ``'silu'`` or ``'swish'``.
        reverse: anti-causal direction, ``out[t]`` from ``x[t .. t + width - 1]`` (not in causal-conv1d): equals
            ``causal_conv1d(x.flip(-1), …).flip(-1)``, as the backward branch of Vision Mamba needs.
        backend: ``'auto'``/``'torch'`` or ``'reference'``; None reads ``VISIONZOO_CONV1D_BACKEND``.

    Returns:
        (batch, dim, seqlen) tensor.

    Raises:
        ValueError: a wrong shape, dtype, device, activation or backend (the message names the argument).
    """
    if not isinstance(x, _torch.Tensor):
        raise TypeError(f'x must be a torch.Tensor of shape (batch, dim, seqlen), got {type(x).__name__}')
    if x.dim() != 3 or min(x.shape) < 1:
        raise ValueError(f'x must have shape (batch, dim, seqlen) with every size >= 1, got {_shape(x)}')
    _check('x', x, None, '(batch, dim, seqlen)', None)
    dim = x.shape[1]
    if not isinstance(weight, _torch.Tensor):
        raise TypeError(f'weight must be a torch.Tensor of shape (dim, width), got {type(weight).__name__}')
    if weight.dim() != 2 or weight.shape[0] != dim or weight.shape[1] < 1:
        raise ValueError(f'weight must have shape (dim, width)=({dim}, width), got {_shape(weight)}')
    _check('weight', weight, None, '(dim, width)', x.device)
    if bias is not None:
        _check('bias', bias, (dim,), '(dim,)', x.device)
    if activation not in _ACTIVATIONS:
        raise ValueError(f'activation must be one of {_ACTIVATIONS}, got {activation!r}')
    name = requested_backend(backend, ENV_BACKEND, BACKENDS)
    if name == 'reference':
        return causal_conv1d_reference(x, weight, bias, activation, reverse)
    return causal_conv1d_torch(x, weight, bias, activation, reverse)
