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

Inputs are read in place (heads-last, viewed as (batch, heads, positions, dim)); outputs and gradients are written
into contiguous heads-last buffers through the same view and returned without a copy. Math runs in float32
(float64 for float64 inputs); outputs and gradients take the inputs' dtypes.
"""
from typing import Optional, Tuple

import torch

from .window import tile_tables

__all__ = ['neighborhood_attention_torch', 'tile_shape']

# Numbers in one (batch, heads, tiles, Tq, Wk) logits buffer of a chunk: 2**18 float32 (1 MiB) keeps a chunk's five
# buffers (logits, probabilities, their gradients, bias) in a core's L2 plus the shared L3; measured as fast as
# 2**20 on 2 cores, with a quarter of the working memory.
_CHUNK_ELEMENTS = 1 << 18
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
    """Zeros shaped like x, viewed as (batch, heads, positions, dim) (contiguous heads-last underneath)."""
    return _flat(torch.zeros(x.shape, dtype=cdt, device=x.device))


def _result(buffer: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A buffer of :func:`_buffer` in ``like``'s shape and dtype."""
    return buffer.transpose(1, 2).reshape(like.shape).to(like.dtype)


class _Chunks:
    """The tile tables on the inputs' device, cut into chunks, with the additive mask or bias of each chunk.

    Padding slots are clamped to real rows for reading. Padding keys are masked out, so nothing is added to the
    row they read (their probabilities are zero); padding queries get a zero upstream gradient (``query_valid``)
    and are left out of the writes (``writes``: per chunk, the valid rows of its flattened queries and their
    positions).
    """

    def __init__(self, q: torch.Tensor, kernel, dilation, causal, rpb: Optional[torch.Tensor], cdt: torch.dtype):
        batch, *spatial, heads, _ = q.shape
        tables = tile_tables(tuple(spatial), kernel, dilation, causal, tile_shape(kernel))
        device = q.device
        npos = q[0, ..., 0, 0].numel()
        query = tables.query.to(device)
        self.query, self.key = query.clamp(max=npos - 1), tables.key.to(device).clamp(max=npos - 1)
        self.query_valid = (query < npos).to(cdt)[..., None]
        self.rel = tables.rel.to(device)
        self.mask = torch.zeros(tables.allowed.shape, dtype=cdt, device=device)
        self.mask.masked_fill_(~tables.allowed.to(device), float('-inf'))
        self.rpb = None if rpb is None else rpb.reshape(heads, -1).to(cdt)
        ntiles, tq = query.shape
        per_tile = batch * heads * tq * self.key.shape[1]
        step = max(1, _CHUNK_ELEMENTS // per_tile)
        self.bounds = [(s, min(s + step, ntiles)) for s in range(0, ntiles, step)]
        self.writes = []
        for s, e in self.bounds:
            positions = query[s:e].reshape(-1)
            valid = positions < npos
            rows = None if bool(valid.all()) else valid.nonzero().squeeze(1)
            self.writes.append((rows, positions if rows is None else positions[rows]))

    def bias(self, s: int, e: int) -> torch.Tensor:
        """Additive term of the logits of tiles s..e: (heads, tiles, Tq, Wk) with the bias, else (tiles, Tq, Wk)."""
        if self.rpb is None:
            return self.mask[s:e]
        return self.rpb[:, self.rel[s:e]] + self.mask[s:e]


def _gather(x: torch.Tensor, index: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
    """Rows ``index`` (tiles, n) of x (batch, heads, positions, dim) as contiguous (batch, heads, tiles, n, dim)."""
    batch, heads, _, dim = x.shape
    return x.index_select(2, index.reshape(-1)).to(cdt).view(batch, heads, *index.shape, dim)


def _write(buffer: torch.Tensor, values: torch.Tensor, rows: Optional[torch.Tensor], positions: torch.Tensor) -> None:
    """Copy rows ``rows`` (all if None) of ``values`` (batch, heads, tiles, n, dim) to ``positions`` of a buffer."""
    values = values.view(buffer.shape[0], buffer.shape[1], -1, buffer.shape[3])
    buffer.index_copy_(2, positions, values if rows is None else values.index_select(2, rows))


def _add(buffer: torch.Tensor, values: torch.Tensor, index: torch.Tensor) -> None:
    """Add ``values`` (batch, heads, tiles, n, dim) to rows ``index`` (tiles, n) of a buffer."""
    buffer.index_add_(2, index.reshape(-1), values.view(buffer.shape[0], buffer.shape[1], -1, buffer.shape[3]))


def _logits(qf, kf, chunks: _Chunks, s: int, e: int, scale: float, cdt: torch.dtype):
    """Gathered, scaled queries and gathered keys of tiles s..e, and their masked, biased logits."""
    qc = _gather(qf, chunks.query[s:e], cdt).mul_(scale)
    kc = _gather(kf, chunks.key[s:e], cdt)
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
        for (s, e), (rows, positions) in zip(chunks.bounds, chunks.writes):
            _, _, logits = _logits(qf, kf, chunks, s, e, scale, cdt)
            probs = torch.softmax(logits, dim=-1)
            _write(out, torch.matmul(probs, _gather(vf, chunks.key[s:e], cdt)), rows, positions)
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
        for (s, e), (rows, positions) in zip(chunks.bounds, chunks.writes):
            qc, kc, logits = _logits(qf, kf, chunks, s, e, scale, cdt)
            probs = torch.softmax(logits, dim=-1)
            doc = _gather(dof, chunks.query[s:e], cdt).mul_(chunks.query_valid[s:e])
            _add(dv, torch.matmul(probs.transpose(-1, -2), doc), chunks.key[s:e])
            dprobs = torch.matmul(doc, _gather(vf, chunks.key[s:e], cdt).transpose(-1, -2))
            ds = torch._softmax_backward_data(dprobs, probs, -1, cdt)
            if drpb is not None:
                drpb.index_add_(1, chunks.rel[s:e].reshape(-1), ds.sum(0).view(heads, -1))
            _write(dq, torch.matmul(ds, kc), rows, positions)
            _add(dk, torch.matmul(ds.transpose(-1, -2), qc), chunks.key[s:e])
        dq.mul_(scale)
        drpb = None if rpb is None else drpb.view(rpb.shape).to(rpb.dtype)
        return _result(dq, q), _result(dk, k), _result(dv, v), drpb, None, None, None, None


def neighborhood_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Tuple[int, ...],
                                 dilation: Tuple[int, ...], causal: Tuple[bool, ...], rpb: Optional[torch.Tensor],
                                 scale: float) -> torch.Tensor:
    """Tiled neighbourhood attention (arguments validated, per-axis tuples); output in ``q``'s dtype."""
    return NeighborhoodAttentionFn.apply(q, k, v, rpb, kernel, dilation, causal, scale)
