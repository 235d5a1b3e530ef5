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

Inputs are read in place (heads-last, viewed as (batch, heads, positions, dim)); outputs and gradients are
written into (batch, positions + 1, heads, dim) buffers whose last row takes the writes of padding slots, and are
returned as views of them. Math runs in float32 (float64 for float64 inputs); outputs and gradients take the
inputs' dtypes.
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


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(batch, *spatial, heads, dim) as a (batch, heads, positions, dim) view (a copy only if x is not viewable)."""
    return x.reshape(x.shape[0], -1, x.shape[-2], x.shape[-1]).transpose(1, 2)


def _buffer(x: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
    """Zeros (batch, positions + 1, heads, dim): row ``positions`` takes the writes of padding slots."""
    return x.new_zeros((x.shape[0], x[0, ..., 0, 0].numel() + 1, x.shape[-2], x.shape[-1]), dtype=cdt)


def _result(buffer: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A buffer of :func:`_buffer` without its padding row, in ``like``'s shape and dtype."""
    return buffer[:, :-1].reshape(like.shape).to(like.dtype)


class _Chunks:
    """The tile tables on the inputs' device, cut into chunks, with the additive mask or bias of each chunk.

    ``query``/``key`` hold positions to write to (``positions`` for padding slots), ``query_read``/``key_read`` the
    same clamped to real rows for gathering; padding keys are masked out, padding queries are written to the
    padding row and their upstream gradient is zeroed (``query_valid``).
    """

    def __init__(self, q: torch.Tensor, kernel, dilation, causal, rpb: Optional[torch.Tensor], cdt: torch.dtype):
        batch, *spatial, heads, _ = q.shape
        tables = tile_tables(tuple(spatial), kernel, dilation, causal, tile_shape(kernel))
        device = q.device
        npos = q[0, ..., 0, 0].numel()
        self.query, self.key = tables.query.to(device), tables.key.to(device)
        self.query_read, self.key_read = self.query.clamp(max=npos - 1), self.key.clamp(max=npos - 1)
        self.query_valid = (self.query < npos).to(cdt)[..., None]
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


def _gather(x: torch.Tensor, index: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
    """Rows ``index`` (tiles, n) of x (batch, heads, positions, dim) as contiguous (batch, heads, tiles, n, dim)."""
    batch, heads, _, dim = x.shape
    return x.index_select(2, index.reshape(-1)).to(cdt).view(batch, heads, *index.shape, dim)


def _scatter(buffer: torch.Tensor, index: torch.Tensor, values: torch.Tensor, add: bool) -> None:
    """Write (or add) ``values`` (batch, heads, tiles, n, dim) to rows ``index`` of a :func:`_buffer`."""
    view = buffer.transpose(1, 2)
    values = values.view(view.shape[0], view.shape[1], -1, view.shape[3])
    if add:
        view.index_add_(2, index.reshape(-1), values)
    else:
        view.index_copy_(2, index.reshape(-1), values)


def _logits(qf, kf, chunks: _Chunks, s: int, e: int, scale: float, cdt: torch.dtype):
    """Gathered, scaled queries and gathered keys of tiles s..e, and their masked, biased logits."""
    qc = _gather(qf, chunks.query_read[s:e], cdt).mul_(scale)
    kc = _gather(kf, chunks.key_read[s:e], cdt)
    logits = torch.matmul(qc, kc.transpose(-1, -2))
    logits.add_(chunks.bias(s, e))
    return qc, kc, logits


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class NeighborhoodAttentionFn(torch.autograd.Function):
    """Tiled neighbourhood attention; the backward pass recomputes each chunk's logits and probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel, dilation, causal, scale):
        cdt = _compute_dtype(q)
        chunks = _Chunks(q, kernel, dilation, causal, rpb, cdt)
        qf, kf, vf = _flat(q), _flat(k), _flat(v)
        out = _buffer(q, cdt)
        for s, e in chunks.bounds:
            _, _, logits = _logits(qf, kf, chunks, s, e, scale, cdt)
            probs = torch.softmax(logits, dim=-1)
            _scatter(out, chunks.query[s:e], torch.matmul(probs, _gather(vf, chunks.key_read[s:e], cdt)), add=False)
        ctx.save_for_backward(q, k, v, rpb)
        ctx.config = (kernel, dilation, causal, scale)
        return _result(out, q)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, rpb = ctx.saved_tensors
        kernel, dilation, causal, scale = ctx.config
        cdt = _compute_dtype(q)
        chunks = _Chunks(q, kernel, dilation, causal, rpb, cdt)
        qf, kf, vf, dof = _flat(q), _flat(k), _flat(v), _flat(dout)
        dq, dk, dv = _buffer(q, cdt), _buffer(k, cdt), _buffer(v, cdt)
        drpb = None if rpb is None else torch.zeros_like(chunks.rpb)
        heads = q.shape[-2]
        for s, e in chunks.bounds:
            qc, kc, logits = _logits(qf, kf, chunks, s, e, scale, cdt)
            probs = torch.softmax(logits, dim=-1)
            doc = _gather(dof, chunks.query_read[s:e], cdt).mul_(chunks.query_valid[s:e])
            _scatter(dv, chunks.key[s:e], torch.matmul(probs.transpose(-1, -2), doc), add=True)
            dprobs = torch.matmul(doc, _gather(vf, chunks.key_read[s:e], cdt).transpose(-1, -2))
            ds = torch._softmax_backward_data(dprobs, probs, -1, cdt)
            if drpb is not None:
                drpb.index_add_(1, chunks.rel[s:e].reshape(-1), ds.sum(0).view(heads, -1))
            _scatter(dq, chunks.query[s:e], torch.matmul(ds, kc), add=False)
            _scatter(dk, chunks.key[s:e], torch.matmul(ds.transpose(-1, -2), qc), add=True)
        dq.mul_(scale)
        drpb = None if rpb is None else drpb.view(rpb.shape).to(rpb.dtype)
        return _result(dq, q), _result(dk, k), _result(dv, v), drpb, None, None, None, None


def neighborhood_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Tuple[int, ...],
                                 dilation: Tuple[int, ...], causal: Tuple[bool, ...], rpb: Optional[torch.Tensor],
                                 scale: float) -> torch.Tensor:
    """Tiled neighbourhood attention (arguments validated, per-axis tuples); output in ``q``'s dtype."""
    return NeighborhoodAttentionFn.apply(q, k, v, rpb, kernel, dilation, causal, scale)
