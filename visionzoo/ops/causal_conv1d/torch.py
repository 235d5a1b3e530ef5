"""Causal depthwise conv1d through PyTorch's grouped convolution (oneDNN on CPU, cuDNN on CUDA).

The input is padded on the left by ``width - 1`` and convolved without padding, so the output has exactly
``seqlen`` positions and no slice of a longer result is copied. The anti-causal direction (``reverse``) pads on the
right and flips the taps, which equals flipping the sequence, convolving and flipping back. Autograd
differentiates the convolution.
"""
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ['causal_conv1d_torch']


def causal_conv1d_torch(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                        activation: Optional[str] = None, reverse: bool = False) -> torch.Tensor:
    """Causal depthwise conv1d on the PyTorch path; arguments as :func:`visionzoo.ops.causal_conv1d`.

    Computes in float32 (float64 for float64 ``x``) and returns ``x``'s dtype.
    """
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    dim, width = weight.shape
    w = weight.to(cdt)
    if reverse:
        w = w.flip(-1)
    pad = (0, width - 1) if reverse else (width - 1, 0)
    out = F.conv1d(F.pad(x.to(cdt), pad), w.unsqueeze(1), None if bias is None else bias.to(cdt), groups=dim)
    if activation is not None:
        out = F.silu(out, inplace=not (torch.is_grad_enabled() and out.requires_grad))
    return out.to(x.dtype)
