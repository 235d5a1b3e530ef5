"""The official token-level attention of BRA (``torch.gather`` of the routed regions); for tests and benchmarks.

As rayleizhu/BiFormer (ops/torch/rrsda.py and ops/bra_legacy.py ``KVGather``): keys and values are laid out
region-major, expanded to (batch, heads, query regions, key regions, tokens, dim) without a copy, and
``torch.gather`` picks the ``topk`` routed regions of every query region, materialising ``topk`` copies of K and V.
Autograd differentiates it; the backward of that gather scatters into a zero tensor of the full expanded shape
(``n_win**2`` times the size of K and V), which is what makes the official training slow and memory-hungry.
"""
import torch
import torch.nn.functional as F

__all__ = ['routing_attention_reference', 'to_regions', 'from_regions']


def to_regions(x: torch.Tensor, n_win: int, rh: int, rw: int) -> torch.Tensor:
    """(batch, height, width, heads, dim), zero-padded to ``n_win`` regions of rh x rw per side, as
    (batch, heads, regions, rh * rw, dim) (regions and their tokens row-major)."""
    batch, height, width, heads, dim = x.shape
    x = F.pad(x, (0, 0, 0, 0, 0, n_win * rw - width, 0, n_win * rh - height))
    x = x.view(batch, n_win, rh, n_win, rw, heads, dim).permute(0, 5, 1, 3, 2, 4, 6)
    return x.reshape(batch, heads, n_win * n_win, rh * rw, dim)


def from_regions(x: torch.Tensor, n_win: int, rh: int, rw: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`to_regions`, cropped to height x width."""
    batch, heads, _, _, dim = x.shape
    x = x.view(batch, heads, n_win, n_win, rh, rw, dim).permute(0, 2, 4, 3, 5, 1, 6)
    return x.reshape(batch, n_win * rh, n_win * rw, heads, dim)[:, :height, :width]


def routing_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, n_win: int,
                                scale: float) -> torch.Tensor:
    """Attention of every query region over its routed regions ``index`` (batch, n_win**2, topk), by gather.

    Arguments are those of :func:`visionzoo.ops.routing_attention` after validation and routing. Computes in float32
    (float64 for float64 inputs) and returns ``q``'s dtype.
    """
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    batch, height, width, heads, _ = q.shape
    rh, rw = -(-height // n_win), -(-width // n_win)
    qr, kr, vr = (to_regions(t.to(cdt), n_win, rh, rw) for t in (q, k, v))
    regions, tokens, topk = n_win * n_win, rh * rw, index.shape[-1]

    def gather(x):
        expanded = x.unsqueeze(2).expand(-1, -1, regions, -1, -1, -1)  # (b, h, query region, key region, t, d)
        idx = index.view(batch, 1, regions, topk, 1, 1).expand(-1, heads, -1, -1, tokens, x.shape[-1])
        return torch.gather(expanded, 3, idx).flatten(3, 4)  # (b, h, query region, topk * t, d)

    attn = torch.softmax((qr * scale) @ gather(kr).transpose(-1, -2), dim=-1)
    out = attn @ gather(vr)
    return from_regions(out, n_win, rh, rw, height, width).to(q.dtype)
