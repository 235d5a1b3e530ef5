"""Neighbourhood attention in plain PyTorch, with a hand-written backward: the path for CPU tensors.

Design (the plan of fused NA kernels, written with batched PyTorch operations):

* Queries are cut into tiles of ``tile`` consecutive positions of one dilation group per axis (7 x 7 in 2-D,
  32 in 1-D, 4 x 4 x 4 in 3-D). Every neighbour of a tile's queries lies in a key block of ``tile + kernel - 1``
  positions per axis (see :mod:`.window`), so one tile is a small dense attention: ``(Tq, dim) @ (dim, Wk)``
  logits, the bias and mask of the tile added, a softmax, ``@ (Wk, dim)`` values. Every window fits in its block,
  so no online softmax is needed.
* Tiles are processed a chunk at a time (all of the batch and heads), the chunk sized so that one logits buffer
  holds about ``_CHUNK_ELEMENTS`` numbers; nothing of size positions x positions exists. Memory beyond inputs,
  outputs and gradients: a few chunk buffers and the gathered q/k/v of a chunk.
* The forward pass keeps nothing but its inputs. The backward pass recomputes each chunk's logits and softmax,
  forms ``dS = P * (dP - rowsum(dP * P))`` (PyTorch's fused softmax backward), writes dq per tile, and scatters
  dk, dv (key blocks of neighbouring tiles overlap) and the bias gradient with ``index_add_``.

Inputs are laid out once as (batch, heads, positions + 1, dim) with a zero row for padding slots. Math runs in
float32 (float64 for float64 inputs); outputs and gradients take the inputs' dtypes.
"""
from typing import Optional, Tuple

import torch

from .window import tile_tables

__all__ = ['neighborhood_attention_torch', 'tile_shape']

# Numbers in one (batch, heads, tiles, Tq, Wk) logits buffer of a chunk: 2**20 float32 (4 MiB) keeps a chunk's
# few buffers in the last-level cache of common CPUs.
_CHUNK_ELEMENTS = 1 << 20
# Queries per tile along every axis, by rank. Measured on one CPU core (56x56 map, k=7; 1-D l=4096, k=63): 7
# beats 4 (small products) and 8 (more wasted logits, 64 x 196 per tile instead of 49 x 169) in 2-D; 32 beats 16
# and 64 in 1-D. NAT/DiNAT maps at 224 px are multiples of 7.
_TILE = {1: 32, 2: 7, 3: 4}


def tile_shape(kernel: Tuple[int, ...]) -> Tuple[int, ...]:
    """Queries per tile along each axis for the PyTorch path."""
    return (_TILE[len(kernel)],) * len(kernel)


def _heads_first(x: torch.Tensor, cdt: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """(batch, *spatial, heads, dim) -> contiguous (batch, heads, positions + 1, dim), last row zero."""
    batch, heads, dim = x.shape[0], x.shape[-2], x.shape[-1]
    flat = x.reshape(batch, -1, heads, dim)
    out = flat.new_empty((batch, heads, flat.shape[1] + 1, dim), dtype=cdt)
    out[:, :, :-1].copy_(flat.transpose(1, 2))
    out[:, :, -1].zero_()
    if scale != 1.0:
        out.mul_(scale)
    return out


def _heads_last(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_heads_first` (drops the padding row), in ``like``'s shape and dtype."""
    return x[:, :, :-1].transpose(1, 2).reshape(like.shape).to(like.dtype)


class _Chunks:
    """The tile tables on the inputs' device, cut into chunks, with the additive mask or bias of each chunk."""

    def __init__(self, q: torch.Tensor, kernel, dilation, causal, rpb: Optional[torch.Tensor], cdt: torch.dtype):
        batch, *spatial, heads, _ = q.shape
        tables = tile_tables(tuple(spatial), kernel, dilation, causal, tile_shape(kernel))
        device = q.device
        self.query, self.key = tables.query.to(device), tables.key.to(device)
        self.rel = tables.rel.to(device)
        self.mask = torch.zeros(tables.allowed.shape, dtype=cdt, device=device)
        self.mask.masked_fill_(~tables.allowed.to(device), float('-inf'))
        self.rpb = None if rpb is None else rpb.reshape(heads, -1).to(cdt)
        ntiles, tq = self.query.shape
        per_tile = batch * heads * tq * self.key.shape[1]
        self.step = max(1, _CHUNK_ELEMENTS // per_tile)
        self.bounds = [(s, min(s + self.step, ntiles)) for s in range(0, ntiles, self.step)]

    def bias(self, s: int, e: int) -> torch.Tensor:
        """Additive term of the logits of tiles s..e: (heads, tiles, Tq, Wk) with the bias, else (tiles, Tq, Wk)."""
        if self.rpb is None:
            return self.mask[s:e]
        return self.rpb[:, self.rel[s:e]] + self.mask[s:e]


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (tiles, n) of x (batch, heads, positions + 1, dim) as (batch, heads, tiles, n, dim)."""
    batch, heads, _, dim = x.shape
    return x.index_select(2, index.reshape(-1)).view(batch, heads, *index.shape, dim)


def _logits(qh, kh, chunks: _Chunks, s: int, e: int):
    """Gathered (scaled) queries and keys of tiles s..e and their masked, biased logits."""
    qc, kc = _gather(qh, chunks.query[s:e]), _gather(kh, chunks.key[s:e])
    logits = torch.matmul(qc, kc.transpose(-1, -2))
    logits.add_(chunks.bias(s, e))
    return qc, kc, logits


class NeighborhoodAttentionFn(torch.autograd.Function):
    """Tiled neighbourhood attention; the backward pass recomputes each chunk's logits and probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel, dilation, causal, scale):
        cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
        chunks = _Chunks(q, kernel, dilation, causal, rpb, cdt)
        qh, kh, vh = _heads_first(q, cdt, scale), _heads_first(k, cdt), _heads_first(v, cdt)
        out = torch.zeros_like(qh)
        batch, heads, _, dim = qh.shape
        for s, e in chunks.bounds:
            _, _, logits = _logits(qh, kh, chunks, s, e)
            probs = torch.softmax(logits, dim=-1)
            out.index_copy_(2, chunks.query[s:e].reshape(-1),
                            torch.matmul(probs, _gather(vh, chunks.key[s:e])).view(batch, heads, -1, dim))
        ctx.save_for_backward(q, k, v, rpb)
        ctx.config = (kernel, dilation, causal, scale)
        return _heads_last(out, q)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, rpb = ctx.saved_tensors
        kernel, dilation, causal, scale = ctx.config
        cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
        chunks = _Chunks(q, kernel, dilation, causal, rpb, cdt)
        qh, kh, vh, doh = (_heads_first(q, cdt, scale), _heads_first(k, cdt), _heads_first(v, cdt),
                           _heads_first(dout, cdt))
        dq, dk, dv = torch.zeros_like(qh), torch.zeros_like(kh), torch.zeros_like(vh)
        drpb = None if rpb is None else torch.zeros_like(chunks.rpb)
        batch, heads, _, dim = qh.shape
        for s, e in chunks.bounds:
            qc, kc, logits = _logits(qh, kh, chunks, s, e)
            probs = torch.softmax(logits, dim=-1)
            qidx, kidx = chunks.query[s:e], chunks.key[s:e]
            doc = _gather(doh, qidx)
            dv.index_add_(2, kidx.reshape(-1), torch.matmul(probs.transpose(-1, -2), doc).view(batch, heads, -1, dim))
            dprobs = torch.matmul(doc, _gather(vh, kidx).transpose(-1, -2))
            ds = torch._softmax_backward_data(dprobs, probs, -1, cdt)
            if drpb is not None:
                drpb.index_add_(1, chunks.rel[s:e].reshape(-1), ds.sum(0).view(heads, -1))
            dq.index_copy_(2, qidx.reshape(-1), torch.matmul(ds, kc).view(batch, heads, -1, dim))
            dk.index_add_(2, kidx.reshape(-1), torch.matmul(ds.transpose(-1, -2), qc).view(batch, heads, -1, dim))
        dq.mul_(scale)
        drpb = None if rpb is None else drpb.view(rpb.shape).to(rpb.dtype)
        return _heads_last(dq, q), _heads_last(dk, k), _heads_last(dv, v), drpb, None, None, None, None


def neighborhood_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Tuple[int, ...],
                                 dilation: Tuple[int, ...], causal: Tuple[bool, ...], rpb: Optional[torch.Tensor],
                                 scale: float) -> torch.Tensor:
    """Tiled neighbourhood attention (arguments validated, per-axis tuples); output in ``q``'s dtype."""
    return NeighborhoodAttentionFn.apply(q, k, v, rpb, kernel, dilation, causal, scale)
