"""Dense neighbourhood attention: full attention with a boolean mask and the bias; for tests and benchmarks.

Builds the (N, N) mask and (heads, N, N) logits of the whole map, so memory grows with the square of the number of
positions. Differentiated by autograd (gradients of q, k, v and rpb).
"""
from typing import Optional, Tuple

import torch

from .window import dense_tables

__all__ = ['neighborhood_attention_reference']


def neighborhood_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Tuple[int, ...],
                                     dilation: Tuple[int, ...], causal: Tuple[bool, ...],
                                     rpb: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """Neighbourhood attention as masked dense attention.

    Arguments are those of :func:`visionzoo.ops.neighborhood_attention` after validation (per-axis tuples).
    Computes in float32 (float64 for float64 inputs) and returns ``q``'s dtype.
    """
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    batch, *spatial, heads, dim = q.shape
    n = q[0, ..., 0, 0].numel()
    allowed, rel = dense_tables(tuple(spatial), kernel, dilation, causal)
    allowed, rel = allowed.to(q.device), rel.to(q.device)
    qf, kf, vf = (t.reshape(batch, n, heads, dim).to(cdt) for t in (q, k, v))
    logits = torch.einsum('bihd,bjhd->bhij', qf * scale, kf)
    if rpb is not None:
        logits = logits + rpb.reshape(heads, -1).to(cdt)[:, rel]
    logits = logits.masked_fill(~allowed, float('-inf'))
    out = torch.einsum('bhij,bjhd->bihd', torch.softmax(logits, dim=-1), vf)
    return out.reshape(q.shape).to(q.dtype)
