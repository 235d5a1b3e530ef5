"""Causal depthwise conv1d written out as its definition: one shifted multiply-add per tap, autograd for gradients."""
from typing import Optional

import torch
import torch.nn.functional as F


def causal_conv1d_reference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                            activation: Optional[str] = None, reverse: bool = False) -> torch.Tensor:
    """``out[t] = bias + sum_k weight[:, k] * x[t - (width - 1 - k)]`` (zero before the start), then SiLU if asked.

    With ``reverse`` the taps look forward instead: ``x[t + (width - 1 - k)]`` (zero past the end).

    Arguments as :func:`visionzoo.ops.causal_conv1d` (validated there). Computes in float32 (float64 for float64
    ``x``) and returns ``x``'s dtype. For tests only.
    """
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    seqlen = x.shape[-1]
    width = weight.shape[1]
    xf = x.to(cdt)
    w = weight.to(cdt)
    out = torch.zeros_like(xf)
    if bias is not None:
        out = out + bias.to(cdt)[:, None]
    for k in range(width):
        shift = width - 1 - k
        if shift >= seqlen:
            continue
        zeros = xf.new_zeros(xf.shape[:-1] + (shift,))
        if reverse:
            shifted = torch.cat([xf[..., shift:], zeros], dim=-1)
        else:
            shifted = torch.cat([zeros, xf[..., :seqlen - shift]], dim=-1)
        out = out + w[:, k, None] * shifted
    if activation is not None:
        out = F.silu(out)
    return out.to(x.dtype)
