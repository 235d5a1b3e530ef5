"""Neighbourhood attention as fused Triton kernels (forward and backward), for CUDA tensors.

Kernel plan:

* The queries are cut into the tiles of :func:`.window.tile_tables` (8 x 8 in 2-D, 64 in 1-D, 4 x 4 x 4 in 3-D):
  every neighbour of a tile's queries lies in its key block. One program handles one (tile, batch, head): it loads
  the tile's queries once and walks the key block ``BLOCK_N`` keys at a time with an online softmax (running max
  and sum, base-2 exponentials), so the attention weights never reach memory.
* The mask and the bias index of a tile come from one int32 table (tiles, Tq, Wk) shared by the batch and the
  heads: the index into the flattened ``(2k-1, ...)`` bias table, -1 where the key is outside the query's window.
  This keeps 1-, 2- and 3-D, dilation and causal axes in one kernel.
* The forward kernel writes the output and the log-sum-exp per query. The backward kernel runs per query tile
  again: it recomputes the probabilities from the log-sum-exp, writes dq, and adds dk, dv and the bias gradient
  into float32 buffers with atomics (key blocks of neighbouring tiles overlap), so it is not bitwise
  deterministic. ``rowsum(dO * O)`` is computed beforehand by PyTorch.

Inputs may be float32, float16 or bfloat16; softmax statistics and accumulators are float32, half-precision tiles
are multiplied on tensor cores and float32 ones in full precision (no TF32). Not tuned on hardware. On CPU tensors
the kernels run in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` in the environment before Triton is
first imported.
"""
import functools
import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._triton_utils import check_device, dot, fp32_dot, interpreting
from .window import tile_tables

__all__ = ['neighborhood_attention_triton', 'interpreting']

_LOG2E = 1.4426950408889634


@triton.jit
def _query_tile(qidx_ptr, heads, dim, npos, tq, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's query tile (grid axis 0) of one (batch, head) (grid axis 1): tile, batch*head index, head,
    element offset of the (batch, head), rows, row mask, positions, valid, element offsets, element mask, dim
    offsets and dim mask."""
    tile = tl.program_id(0)
    bh = tl.program_id(1)
    head = bh % heads
    base = (bh // heads).to(tl.int64) * npos * heads * dim + head * dim
    rows = tl.arange(0, BLOCK_M)
    rmask = rows < tq
    qpos = tl.load(qidx_ptr + tile * tq + rows, mask=rmask, other=npos)
    qvalid = rmask & (qpos < npos)
    d = tl.arange(0, BLOCK_D)
    dmask = d < dim
    offsets = base + qpos.to(tl.int64)[:, None] * heads * dim + d[None, :]
    return tile, bh, head, base, rows, rmask, qpos, qvalid, offsets, qvalid[:, None] & dmask[None, :], d, dmask


@triton.jit
def _load_rows(ptr, offsets, mask, FP32_DOT: tl.constexpr):
    """Rows of q (or of the output gradient) of a tile, in float32 when the products run in float32."""
    x = tl.load(ptr + offsets, mask=mask, other=0.0)
    if FP32_DOT:
        x = x.to(tl.float32)
    return x


@triton.jit
def _key_block(q, k_ptr, v_ptr, rpb_ptr, kidx_ptr, bidx_ptr, tile, n0, tq, wk, npos, heads, dim, head, base,
               rpb_len, qk_scale, rows, rmask, d, dmask,
               HAS_RPB: tl.constexpr, FP32_DOT: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys n0 .. n0 + BLOCK_N of a tile's key block: k, v, base-2 logits (bias added, -inf outside the windows),
    the bias index, and the element offsets and mask of the k/v rows."""
    cols = n0 + tl.arange(0, BLOCK_N)
    cmask = cols < wk
    kpos = tl.load(kidx_ptr + tile * wk + cols, mask=cmask, other=npos)
    kv_off = base + kpos.to(tl.int64)[:, None] * heads * dim + d[None, :]
    kv_mask = (cmask & (kpos < npos))[:, None] & dmask[None, :]
    k = tl.load(k_ptr + kv_off, mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + kv_off, mask=kv_mask, other=0.0)
    if FP32_DOT:
        k, v = k.to(tl.float32), v.to(tl.float32)
    s = dot(q, tl.trans(k), FP32_DOT) * qk_scale
    bi = tl.load(bidx_ptr + (tile * tq + rows[:, None]) * wk + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                 other=-1)
    if HAS_RPB:
        s += tl.load(rpb_ptr + head * rpb_len + bi, mask=bi >= 0, other=0.0).to(tl.float32) * 1.4426950408889634
    return k, v, tl.where(bi >= 0, s, float('-inf')), bi, kv_off, kv_mask


@triton.jit
def _na_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, rpb_ptr, qidx_ptr, kidx_ptr, bidx_ptr,
    heads, dim, npos, tq, wk, rpb_len, qk_scale,
    HAS_RPB: tl.constexpr, FP32_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    tile, bh, head, base, rows, rmask, qpos, qvalid, q_off, q_mask, d, dmask = _query_tile(
        qidx_ptr, heads, dim, npos, tq, BLOCK_M, BLOCK_D)
    q = _load_rows(q_ptr, q_off, q_mask, FP32_DOT)
    m_i = tl.full((BLOCK_M,), float('-inf'), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for n0 in range(0, wk, BLOCK_N):
        _, v, s, _, _, _ = _key_block(q, k_ptr, v_ptr, rpb_ptr, kidx_ptr, bidx_ptr, tile, n0, tq, wk, npos, heads,
                                      dim, head, base, rpb_len, qk_scale, rows, rmask, d, dmask, HAS_RPB, FP32_DOT,
                                      BLOCK_N)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float('-inf'), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, FP32_DOT)
        m_i = m_new
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    tl.store(o_ptr + q_off, (acc / l_safe[:, None]).to(o_ptr.dtype.element_ty), mask=q_mask)
    tl.store(lse_ptr + bh.to(tl.int64) * npos + qpos, m_i + tl.log2(l_safe), mask=qvalid)


@triton.jit
def _na_bwd_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, rpb_ptr, qidx_ptr, kidx_ptr, bidx_ptr,
    dq_ptr, dk_ptr, dv_ptr, drpb_ptr,
    heads, dim, npos, tq, wk, rpb_len, qk_scale, scale,
    HAS_RPB: tl.constexpr, FP32_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    tile, bh, head, base, rows, rmask, qpos, qvalid, q_off, q_mask, d, dmask = _query_tile(
        qidx_ptr, heads, dim, npos, tq, BLOCK_M, BLOCK_D)
    q = _load_rows(q_ptr, q_off, q_mask, FP32_DOT)
    do = _load_rows(do_ptr, q_off, q_mask, FP32_DOT)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * npos + qpos, mask=qvalid, other=0.0)
    delta = tl.load(delta_ptr + bh.to(tl.int64) * npos + qpos, mask=qvalid, other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for n0 in range(0, wk, BLOCK_N):
        k, v, s, bi, kv_off, kv_mask = _key_block(q, k_ptr, v_ptr, rpb_ptr, kidx_ptr, bidx_ptr, tile, n0, tq, wk,
                                                  npos, heads, dim, head, base, rpb_len, qk_scale, rows, rmask, d,
                                                  dmask, HAS_RPB, FP32_DOT, BLOCK_N)
        keep = (bi >= 0) & qvalid[:, None]
        p = tl.where(keep, tl.exp2(s - lse[:, None]), 0.0)
        tl.atomic_add(dv_ptr + kv_off, dot(tl.trans(p.to(do.dtype)), do, FP32_DOT), mask=kv_mask)
        ds = p * (dot(do, tl.trans(v), FP32_DOT) - delta[:, None])
        if HAS_RPB:
            tl.atomic_add(drpb_ptr + head * rpb_len + bi, ds, mask=keep)
        dq += dot(ds.to(k.dtype), k, FP32_DOT)
        tl.atomic_add(dk_ptr + kv_off, dot(tl.trans(ds.to(q.dtype)), q, FP32_DOT) * scale, mask=kv_mask)
    tl.store(dq_ptr + q_off, (dq * scale).to(dq_ptr.dtype.element_ty), mask=q_mask)


def _tile(rank: int) -> Tuple[int, ...]:
    """Queries per tile and axis: 64 per tile on GPU; 16 under the interpreter, so small tests cover many tiles."""
    if interpreting():
        return {1: (16,), 2: (4, 4), 3: (2, 2, 4)}[rank]
    return {1: (64,), 2: (8, 8), 3: (4, 4, 4)}[rank]


@functools.lru_cache(maxsize=32)
def _tables(spatial, kernel, dilation, causal, device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tile tables on ``device`` as int32: query positions, key positions, bias index (-1 outside the window)."""
    t = tile_tables(spatial, kernel, dilation, causal, _tile(len(spatial)))
    bias_index = torch.where(t.allowed, t.rel, -1)
    return tuple(x.to(device=device, dtype=torch.int32).contiguous() for x in (t.query, t.key, bias_index))


def _launch_config(tq: int, dim: int) -> dict:
    block_m = max(16, triton.next_power_of_2(tq))
    return dict(BLOCK_M=block_m, BLOCK_N=16 if interpreting() else 32, BLOCK_D=max(16, triton.next_power_of_2(dim)))


class NeighborhoodAttentionTritonFn(torch.autograd.Function):
    """Fused forward (output and log-sum-exp) and fused backward recomputing the probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel, dilation, causal, scale):
        check_device(q, 'neighborhood attention')
        batch, *spatial, heads, dim = q.shape
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        qidx, kidx, bidx = _tables(tuple(spatial), kernel, dilation, causal, q.device)
        npos = math.prod(spatial)
        out = torch.empty_like(q)
        lse = torch.empty((batch * heads, npos), device=q.device, dtype=torch.float32)
        rpb_c = None if rpb is None else rpb.contiguous()
        grid = (qidx.shape[0], batch * heads)
        _na_fwd_kernel[grid](q, k, v, out, lse, rpb_c if rpb_c is not None else q, qidx, kidx, bidx,
                             heads, dim, npos, qidx.shape[1], kidx.shape[1], 0 if rpb is None else rpb[0].numel(),
                             scale * _LOG2E, HAS_RPB=rpb is not None, FP32_DOT=fp32_dot(q.dtype),
                             **_launch_config(qidx.shape[1], dim))
        ctx.save_for_backward(q, k, v, rpb_c, out, lse)
        ctx.config = (kernel, dilation, causal, scale)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, rpb, out, lse = ctx.saved_tensors
        kernel, dilation, causal, scale = ctx.config
        batch, *spatial, heads, dim = q.shape
        npos = lse.shape[1]
        qidx, kidx, bidx = _tables(tuple(spatial), kernel, dilation, causal, q.device)
        dout = dout.contiguous()
        delta = (dout.float() * out.float()).sum(-1).reshape(batch, npos, heads).transpose(1, 2).contiguous()
        dq = torch.empty_like(q)
        dk = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
        dv = torch.zeros_like(dk)
        drpb = None if rpb is None else torch.zeros(rpb.shape, device=q.device, dtype=torch.float32)
        _na_bwd_kernel[(qidx.shape[0], batch * heads)](
            q, k, v, dout, lse, delta, rpb if rpb is not None else q, qidx, kidx, bidx, dq, dk, dv,
            drpb if drpb is not None else dk, heads, dim, npos, qidx.shape[1], kidx.shape[1],
            0 if rpb is None else rpb[0].numel(), scale * _LOG2E, scale, HAS_RPB=rpb is not None,
            FP32_DOT=fp32_dot(q.dtype), **_launch_config(qidx.shape[1], dim))
        drpb = None if drpb is None else drpb.to(rpb.dtype)
        return dq, dk.to(k.dtype), dv.to(v.dtype), drpb, None, None, None, None


def neighborhood_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Tuple[int, ...],
                                  dilation: Tuple[int, ...], causal: Tuple[bool, ...], rpb: Optional[torch.Tensor],
                                  scale: float) -> torch.Tensor:
    """Fused neighbourhood attention (arguments validated, per-axis tuples); output in ``q``'s dtype."""
    return NeighborhoodAttentionTritonFn.apply(q, k, v, rpb, kernel, dilation, causal, scale)
