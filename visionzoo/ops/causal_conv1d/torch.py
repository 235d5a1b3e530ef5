"""Causal depthwise conv1d through PyTorch's grouped convolution (oneDNN on CPU, cuDNN on CUDA).

The convolution zero-pads ``width - 1`` positions on both sides and the output is the view of its first
``seqlen`` positions (causal) or its last ``seqlen`` (anti-causal, ``reverse``, with flipped taps, which equals
flipping the sequence, convolving and flipping back): no padded copy of the input and no copy of the result.
Autograd differentiates the convolution.
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
    seqlen = x.shape[-1]
    # zero padding on both sides, then the seqlen outputs of one direction: a view, so no padded copy of x is made
    out = F.conv1d(x.to(cdt), w.unsqueeze(1), None if bias is None else bias.to(cdt), padding=width - 1, groups=dim)
    out = out.narrow(-1, width - 1 if reverse else 0, seqlen)
    if activation is not None:
        out = F.silu(out, inplace=not (torch.is_grad_enabled() and out.requires_grad))
    return out.to(x.dtype)
