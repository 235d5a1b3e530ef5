"""Plain sequential selective scan: the formulation the other paths are tested and benchmarked against.

One Python step per time position, every step differentiated by autograd. Slow on purpose (no chunking, no
hand-written backward); use it only in tests and benchmarks.
"""
from typing import Optional

import torch
import torch.nn.functional as F


def selective_scan_reference(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                             delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                             return_last_state: bool = False, reverse: bool = False):
    """Selective scan computed by a sequential loop over the sequence.

    Arguments are those of :func:`visionzoo.ops.selective_scan` (already validated). Computes in float32
    (float64 when ``u`` is float64) and returns the output in ``u``'s dtype.

    Args:
        reverse: scan from the last position to the first (h_t depends on h_{t+1}).

    Returns:
        ``out`` (batch, dim, seqlen), or ``(out, last_state)`` with ``last_state`` (batch, dim, dstate).
    """
    cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, dim, seqlen = u.shape
    dstate = A.shape[1]
    uf = u.to(cdt)
    dt = delta.to(cdt)
    if delta_bias is not None:
        dt = dt + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Af = A.to(cdt)

    def per_channel(X: torch.Tensor, t: int) -> torch.Tensor:
        """B or C at time t as (batch or 1, dim, dstate)."""
        if X.dim() == 2:
            return X.to(cdt)[None]
        if X.dim() == 3:
            return X[:, :, t].to(cdt)[:, None, :]
        groups = X.shape[1]
        return X[:, :, :, t].to(cdt).repeat_interleave(dim // groups, dim=1)

    h = u.new_zeros((batch, dim, dstate), dtype=cdt)
    ys = [None] * seqlen
    order = range(seqlen - 1, -1, -1) if reverse else range(seqlen)
    for t in order:
        dt_t = dt[:, :, t, None]
        h = torch.exp(dt_t * Af) * h + dt_t * per_channel(B, t) * uf[:, :, t, None]
        ys[t] = (h * per_channel(C, t)).sum(-1)
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + D.to(cdt)[:, None] * uf
    if z is not None:
        y = y * F.silu(z.to(cdt))
    out = y.to(u.dtype)
    return (out, h) if return_last_state else out
