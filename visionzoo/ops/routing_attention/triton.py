"""Bi-level routing attention as fused Triton kernels (forward and backward), for CUDA tensors.

Kernel plan (block-sparse flash attention with one block list per query region):

* One program handles ``BLOCK_M`` query tokens of one region for one (batch, head). Region and token coordinates
  are turned into map positions by address arithmetic, so q, k and v are read in place from their
  (batch, height, width, heads, dim) layout (any strides with a unit last stride, e.g. views of the qkv
  projection): no region-major copy, no gathered copy of the routed regions.
* The program walks its ``topk`` routed key regions (from the routing index) ``BLOCK_N`` tokens at a time with an
  online softmax (running max and sum, base-2 exponentials); the attention weights never reach memory. Tokens of
  a region that fall outside the map (the zero padding of the official code) load as zeros and count as keys with
  logit 0; block lanes past the region size are masked out.
* The forward kernel writes the output and the log-sum-exp per query. The backward kernel runs per query block
  again: it recomputes the probabilities from the log-sum-exp, writes dq, and adds dk and dv into float32 buffers
  with atomics (a key region receives from every query region that routed to it), so it is not bitwise
  deterministic. ``rowsum(dO * O)`` is computed beforehand by PyTorch.

Inputs may be float32, float16 or bfloat16; softmax statistics and accumulators are float32, half-precision tiles
are multiplied on tensor cores and float32 ones in full precision (no TF32). Not tuned on hardware. On CPU tensors
the kernels run in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` in the environment before Triton is
first imported.
"""
import torch
import triton
import triton.language as tl

from .._triton_utils import check_device, dot, fp32_dot, interpreting

__all__ = ['routing_attention_triton', 'interpreting']

_LOG2E = 1.4426950408889634


@triton.jit
def _tokens(region, start, n_win, rh, rw, height, width, tokens, BLOCK: tl.constexpr):
    """Tokens ``start .. start + BLOCK`` of a region (row-major in the region): map row and column, whether the
    lane is a token of the region, and whether that token lies inside the map (not padding)."""
    t = start + tl.arange(0, BLOCK)
    valid = t < tokens
    y = (region // n_win) * rh + t // rw
    x = (region % n_win) * rw + t % rw
    return y, x, valid, valid & (y < height) & (x < width)


@triton.jit
def _offsets(b, y, x, head, sb, sy, sx, sh, d):
    """Element offsets of the rows (y, x) of one (batch, head) in a (batch, height, width, heads, dim) tensor."""
    return b.to(tl.int64) * sb + y.to(tl.int64)[:, None] * sy + x[:, None] * sx + head * sh + d[None, :]


@triton.jit
def _load(ptr, offsets, mask, FP32_DOT: tl.constexpr):
    x = tl.load(ptr + offsets, mask=mask, other=0.0)
    if FP32_DOT:
        x = x.to(tl.float32)
    return x


@triton.jit
def _query_block(idx_ptr, heads, height, width, n_win, rh, rw, tokens, topk, q_blocks, BLOCK_M: tl.constexpr):
    """This program's batch, head, the offset of its region's routing list, its query rows and their masks."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    region = pid // q_blocks
    b = bh // heads
    head = bh % heads
    y, x, valid, inside = _tokens(region, (pid % q_blocks) * BLOCK_M, n_win, rh, rw, height, width, tokens, BLOCK_M)
    route = idx_ptr + (b.to(tl.int64) * n_win * n_win + region) * topk
    stat = ((b.to(tl.int64) * height + y) * width + x) * heads + head  # (batch, height, width, heads) statistics
    return b, head, route, y, x, valid, inside, stat


@triton.jit
def _key_block(q, k_ptr, v_ptr, kreg, n0, b, head, n_win, rh, rw, height, width, tokens, qk_scale,
               skb, sky, skx, skh, svb, svy, svx, svh, dk_, dkmask, dv_, dvmask,
               FP32_DOT: tl.constexpr, BLOCK_N: tl.constexpr):
    """Tokens n0 .. n0 + BLOCK_N of key region ``kreg``: k, v, base-2 logits (-inf past the region size), and the
    k/v element offsets (in contiguous gradient buffers) and masks."""
    ky, kx, kvalid, kin = _tokens(kreg, n0, n_win, rh, rw, height, width, tokens, BLOCK_N)
    kmask = kin[:, None] & dkmask[None, :]
    vmask = kin[:, None] & dvmask[None, :]
    k = _load(k_ptr, _offsets(b, ky, kx, head, skb, sky, skx, skh, dk_), kmask, FP32_DOT)
    v = _load(v_ptr, _offsets(b, ky, kx, head, svb, svy, svx, svh, dv_), vmask, FP32_DOT)
    s = dot(q, tl.trans(k), FP32_DOT) * qk_scale
    return k, v, tl.where(kvalid[None, :], s, float('-inf')), ky, kx, kmask, vmask


@triton.jit
def _bra_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, idx_ptr,
    sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
    heads, height, width, n_win, rh, rw, tokens, topk, q_blocks, dim_qk, dim_v, qk_scale,
    FP32_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    b, head, route, y, x, valid, inside, stat = _query_block(idx_ptr, heads, height, width, n_win, rh, rw, tokens,
                                                             topk, q_blocks, BLOCK_M)
    dk_ = tl.arange(0, BLOCK_DQK)
    dv_ = tl.arange(0, BLOCK_DV)
    dkmask = dk_ < dim_qk
    dvmask = dv_ < dim_v
    q = _load(q_ptr, _offsets(b, y, x, head, sqb, sqy, sqx, sqh, dk_), inside[:, None] & dkmask[None, :], FP32_DOT)
    m_i = tl.full((BLOCK_M,), float('-inf'), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)
    for j in range(topk):
        kreg = tl.load(route + j)
        for n0 in range(0, tokens, BLOCK_N):
            _, v, s, _, _, _, _ = _key_block(q, k_ptr, v_ptr, kreg, n0, b, head, n_win, rh, rw, height, width,
                                             tokens, qk_scale, skb, sky, skx, skh, svb, svy, svx, svh, dk_, dkmask,
                                             dv_, dvmask, FP32_DOT, BLOCK_N)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, FP32_DOT)
            m_i = m_new
    o_off = _offsets(b, y, x, head, height * width * heads * dim_v, width * heads * dim_v, heads * dim_v, dim_v, dv_)
    tl.store(o_ptr + o_off, (acc / l_i[:, None]).to(o_ptr.dtype.element_ty), mask=inside[:, None] & dvmask[None, :])
    tl.store(lse_ptr + stat, m_i + tl.log2(l_i), mask=inside)


@triton.jit
def _bra_bwd_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, idx_ptr, dq_ptr, dk_ptr, dv_ptr,
    sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
    heads, height, width, n_win, rh, rw, tokens, topk, q_blocks, dim_qk, dim_v, qk_scale, scale,
    FP32_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    b, head, route, y, x, valid, inside, stat = _query_block(idx_ptr, heads, height, width, n_win, rh, rw, tokens,
                                                             topk, q_blocks, BLOCK_M)
    dk_ = tl.arange(0, BLOCK_DQK)
    dv_ = tl.arange(0, BLOCK_DV)
    dkmask = dk_ < dim_qk
    dvmask = dv_ < dim_v
    qmask = inside[:, None] & dkmask[None, :]
    q = _load(q_ptr, _offsets(b, y, x, head, sqb, sqy, sqx, sqh, dk_), qmask, FP32_DOT)
    # contiguous (batch, height, width, heads, dim) layouts of the output gradient and of dq, dk, dv
    qk_strides = (height * width * heads * dim_qk, width * heads * dim_qk, heads * dim_qk, dim_qk)
    v_strides = (height * width * heads * dim_v, width * heads * dim_v, heads * dim_v, dim_v)
    do = _load(do_ptr, _offsets(b, y, x, head, v_strides[0], v_strides[1], v_strides[2], v_strides[3], dv_),
               inside[:, None] & dvmask[None, :], FP32_DOT)
    lse = tl.load(lse_ptr + stat, mask=inside, other=0.0)
    delta = tl.load(delta_ptr + stat, mask=inside, other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_DQK), tl.float32)
    for j in range(topk):
        kreg = tl.load(route + j)
        for n0 in range(0, tokens, BLOCK_N):
            k, v, s, ky, kx, kmask, vmask = _key_block(q, k_ptr, v_ptr, kreg, n0, b, head, n_win, rh, rw, height,
                                                       width, tokens, qk_scale, skb, sky, skx, skh, svb, svy, svx,
                                                       svh, dk_, dkmask, dv_, dvmask, FP32_DOT, BLOCK_N)
            p = tl.where(inside[:, None], tl.exp2(s - lse[:, None]), 0.0)
            dv_off = _offsets(b, ky, kx, head, v_strides[0], v_strides[1], v_strides[2], v_strides[3], dv_)
            tl.atomic_add(dv_ptr + dv_off, dot(tl.trans(p.to(do.dtype)), do, FP32_DOT), mask=vmask)
            ds = p * (dot(do, tl.trans(v), FP32_DOT) - delta[:, None])
            dq += dot(ds.to(k.dtype), k, FP32_DOT)
            dk_off = _offsets(b, ky, kx, head, qk_strides[0], qk_strides[1], qk_strides[2], qk_strides[3], dk_)
            tl.atomic_add(dk_ptr + dk_off, dot(tl.trans(ds.to(q.dtype)), q, FP32_DOT) * scale, mask=kmask)
    dq_off = _offsets(b, y, x, head, qk_strides[0], qk_strides[1], qk_strides[2], qk_strides[3], dk_)
    tl.store(dq_ptr + dq_off, (dq * scale).to(dq_ptr.dtype.element_ty), mask=qmask)


def _unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, n_win: int) -> tuple:
    """Grid, per-tensor strides, geometry arguments and block sizes shared by both kernels."""
    batch, height, width, heads, dim_qk = q.shape
    rh, rw = -(-height // n_win), -(-width // n_win)
    tokens = rh * rw
    cap = 16 if interpreting() else 64
    block = min(cap, max(16, triton.next_power_of_2(tokens)))
    q_blocks = triton.cdiv(tokens, block)
    strides = [s for t in (q, k, v) for s in t.stride()[:4]]
    geometry = [heads, height, width, n_win, rh, rw, tokens, index.shape[-1], q_blocks, dim_qk, v.shape[-1]]
    blocks = dict(BLOCK_M=block, BLOCK_N=block, BLOCK_DQK=max(16, triton.next_power_of_2(dim_qk)),
                  BLOCK_DV=max(16, triton.next_power_of_2(v.shape[-1])), FP32_DOT=fp32_dot(q.dtype))
    return (n_win * n_win * q_blocks, batch * heads), strides, geometry, blocks


class RoutingAttentionTritonFn(torch.autograd.Function):
    """Fused forward (output and log-sum-exp) and fused backward recomputing the probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, index, n_win, scale):
        check_device(q, 'routing attention')
        q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
        index = index.contiguous()
        grid, strides, geometry, blocks = _launch(q, k, v, index, n_win)
        out = torch.empty(v.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty(q.shape[:4], dtype=torch.float32, device=q.device)
        _bra_fwd_kernel[grid](q, k, v, out, lse, index, *strides, *geometry, scale * _LOG2E, **blocks)
        ctx.save_for_backward(q, k, v, index, out, lse)
        ctx.config = (n_win, scale)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, index, out, lse = ctx.saved_tensors
        n_win, scale = ctx.config
        dout = dout.contiguous()
        delta = (dout.float() * out.float()).sum(-1)
        grid, strides, geometry, blocks = _launch(q, k, v, index, n_win)
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
        dv = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
        _bra_bwd_kernel[grid](q, k, v, dout, lse, delta, index, dq, dk, dv, *strides, *geometry, scale * _LOG2E,
                              scale, **blocks)
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None


def routing_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, n_win: int,
                             scale: float) -> torch.Tensor:
    """Fused routed attention (arguments validated, routing ``index`` (batch, n_win**2, topk)); output in
    ``q``'s dtype."""
    return RoutingAttentionTritonFn.apply(q, k, v, index, n_win, scale)
