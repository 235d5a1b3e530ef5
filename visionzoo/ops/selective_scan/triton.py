"""Selective scan as Triton kernels (forward and backward), for CUDA tensors.

Kernel plan (the design of mamba's CUDA kernel, laid out as Triton tiles):

* One program per (batch, block of ``BLOCK_D`` channels). All channels of a block belong to one group of a
  grouped ``B``/``C``, so a program loads one (dstate, chunk) tile of ``B`` and ``C`` per chunk.
* The sequence is walked in chunks of ``BLOCK_L`` positions. A chunk is a (BLOCK_D, BLOCK_N, BLOCK_L) tile;
  the recurrence ``h_t = a_t h_{t-1} + b_t`` is a ``tl.associative_scan`` over the last axis with the
  first-order combine ``(a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2)``, and the state carried in from the previous
  chunk is folded into the first element. Positions past the end get ``delta = 0`` (decay 1, input 0), so they
  carry the state unchanged.
* The forward kernel writes the output and the state at the end of every chunk (fp32, (batch, dim, nchunks,
  dstate)); the last one is ``last_state``. Nothing of size (…, dstate, seqlen) reaches global memory.
* The backward kernel walks the chunks last to first. It recomputes the chunk's states from the stored state of
  the previous chunk, then runs the reverse scan ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` (``reverse=True``, with the
  decay of the next position loaded shifted by one) and forms every gradient from ``g`` and the states. The
  decay gradient uses ``a_t h_{t-1} = h_t - delta_t B_t u_t`` (as mamba's kernel does), so no shift of the state
  tile is needed. Variable ``dB``/``dC`` are accumulated with fp32 atomics (the channels of a group share them);
  ``dA``, ``dD``, ``d delta_bias`` and constant ``dB``/``dC`` are written as per-batch partial sums and reduced by
  PyTorch, which keeps them deterministic.
* ``REVERSE`` maps logical position ``p`` to memory index ``seqlen - 1 - p``: the backward direction of a
  bidirectional scan reads the unflipped tensors directly.

Inputs may be float32, float16 or bfloat16; all math is float32. On CPU tensors the kernels run in Triton's
interpreter, which needs ``TRITON_INTERPRET=1`` in the environment before Triton is first imported.
"""
import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._triton_utils import check_device, interpreting, softplus

__all__ = ['selective_scan_triton', 'interpreting']


@triton.jit
def _first_order_combine(a1, b1, a2, b2):
    """Compose h -> a1 h + b1 (earlier) with h -> a2 h + b2 (later)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _channel_tile(dim, dstate, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """This program's channels (axis 1 of the grid) and the per-chunk index vectors both kernels use: first
    channel, channel and state offsets, state mask, chunk positions, first/last-position masks, (dim, dstate)
    mask."""
    d0 = tl.program_id(1) * BLOCK_D
    d_offs = d0 + tl.arange(0, BLOCK_D)
    n_offs = tl.arange(0, BLOCK_N)
    n_mask = n_offs < dstate
    l_offs = tl.arange(0, BLOCK_L)
    first = (l_offs == 0)[None, None, :]
    last = (l_offs == BLOCK_L - 1)[None, None, :]
    dn_mask = n_mask[None, :] & (d_offs[:, None] < dim)
    return d0, d_offs, n_offs, n_mask, l_offs, first, last, dn_mask


@triton.jit
def _load_dn(ptr, d_offs, n_offs, dstate, dn_mask):
    """A (dim, dstate) parameter (A, or constant B/C) for this program's channels, as float32."""
    return tl.load(ptr + d_offs[:, None] * dstate + n_offs[None, :], mask=dn_mask, other=0.0).to(tl.float32)


@triton.jit
def _selective_scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, state_ptr,
    seqlen, dim, dstate, nchunks, dim_per_group_B, dim_per_group_C,
    stride_u_b, stride_u_d, stride_delta_b, stride_delta_d, stride_z_b, stride_z_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b = tl.program_id(0)
    d0, d_offs, n_offs, n_mask, l_offs, first, last, dn_mask = _channel_tile(dim, dstate, BLOCK_D, BLOCK_N, BLOCK_L)
    A = _load_dn(A_ptr, d_offs, n_offs, dstate, dn_mask)
    A2 = A * 1.4426950408889634
    if not VAR_B:
        Bc = _load_dn(B_ptr, d_offs, n_offs, dstate, dn_mask)
    if not VAR_C:
        Cc = _load_dn(C_ptr, d_offs, n_offs, dstate, dn_mask)
    if HAS_D:
        Dv = tl.load(D_ptr + d_offs).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d_offs).to(tl.float32)
    B_base = B_ptr + (pid_b * (dim // dim_per_group_B) + d0 // dim_per_group_B) * dstate * seqlen
    C_base = C_ptr + (pid_b * (dim // dim_per_group_C) + d0 // dim_per_group_C) * dstate * seqlen
    u_rows = u_ptr + pid_b * stride_u_b + d_offs[:, None] * stride_u_d
    delta_rows = delta_ptr + pid_b * stride_delta_b + d_offs[:, None] * stride_delta_d
    out_rows = out_ptr + (pid_b * dim + d_offs[:, None]) * seqlen
    state_rows = state_ptr + (pid_b * dim + d_offs[:, None]) * nchunks * dstate + n_offs[None, :]

    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for c in range(0, nchunks):
        pos = c * BLOCK_L + l_offs
        pmask = pos < seqlen
        if REVERSE:
            idx = seqlen - 1 - pos
        else:
            idx = pos
        m2 = pmask[None, :]
        uv = tl.load(u_rows + idx[None, :], mask=m2, other=0.0).to(tl.float32)
        dt = tl.load(delta_rows + idx[None, :], mask=m2, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:
            dt = softplus(dt)
        dt = tl.where(m2, dt, 0.0)
        a = tl.exp2(dt[:, None, :] * A2[:, :, None])
        nl_mask = n_mask[:, None] & m2
        if VAR_B:
            Bv = tl.load(B_base + n_offs[:, None] * seqlen + idx[None, :], mask=nl_mask, other=0.0).to(tl.float32)
            bu = (dt * uv)[:, None, :] * Bv[None, :, :]
        else:
            bu = (dt * uv)[:, None, :] * Bc[:, :, None]
        bu = tl.where(first, bu + a * h[:, :, None], bu)
        _, hs = tl.associative_scan((a, bu), axis=2, combine_fn=_first_order_combine)
        if VAR_C:
            Cv = tl.load(C_base + n_offs[:, None] * seqlen + idx[None, :], mask=nl_mask, other=0.0).to(tl.float32)
            y = tl.sum(hs * Cv[None, :, :], axis=1)
        else:
            y = tl.sum(hs * Cc[:, :, None], axis=1)
        h = tl.sum(tl.where(last, hs, 0.0), axis=2)
        tl.store(state_rows + c * dstate, h, mask=dn_mask)
        if HAS_D:
            y = y + Dv[:, None] * uv
        if HAS_Z:
            zv = tl.load(z_ptr + pid_b * stride_z_b + d_offs[:, None] * stride_z_d + idx[None, :], mask=m2,
                         other=0.0).to(tl.float32)
            y = y * zv / (1.0 + tl.exp(-zv))
        tl.store(out_rows + idx[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _selective_scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, state_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
    seqlen, dim, dstate, nchunks, dim_per_group_B, dim_per_group_C,
    stride_u_b, stride_u_d, stride_delta_b, stride_delta_d, stride_z_b, stride_z_d, stride_dout_b, stride_dout_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b = tl.program_id(0)
    d0, d_offs, n_offs, n_mask, l_offs, first, last, dn_mask = _channel_tile(dim, dstate, BLOCK_D, BLOCK_N, BLOCK_L)
    A = _load_dn(A_ptr, d_offs, n_offs, dstate, dn_mask)
    A2 = A * 1.4426950408889634
    if not VAR_B:
        Bc = _load_dn(B_ptr, d_offs, n_offs, dstate, dn_mask)
        dB_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    if not VAR_C:
        Cc = _load_dn(C_ptr, d_offs, n_offs, dstate, dn_mask)
        dC_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d_offs).to(tl.float32)
        dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d_offs).to(tl.float32)
        dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    B_off = (pid_b * (dim // dim_per_group_B) + d0 // dim_per_group_B) * dstate * seqlen
    C_off = (pid_b * (dim // dim_per_group_C) + d0 // dim_per_group_C) * dstate * seqlen
    u_rows = u_ptr + pid_b * stride_u_b + d_offs[:, None] * stride_u_d
    delta_rows = delta_ptr + pid_b * stride_delta_b + d_offs[:, None] * stride_delta_d
    dout_rows = dout_ptr + pid_b * stride_dout_b + d_offs[:, None] * stride_dout_d
    grad_rows = (pid_b * dim + d_offs[:, None]) * seqlen
    state_rows = state_ptr + (pid_b * dim + d_offs[:, None]) * nchunks * dstate + n_offs[None, :]

    g_carry = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for cc in range(0, nchunks):
        c = nchunks - 1 - cc
        pos = c * BLOCK_L + l_offs
        pmask = pos < seqlen
        nmask_next = (pos + 1) < seqlen
        if REVERSE:
            idx = seqlen - 1 - pos
            idx_next = idx - 1
        else:
            idx = pos
            idx_next = idx + 1
        m2 = pmask[None, :]
        uv = tl.load(u_rows + idx[None, :], mask=m2, other=0.0).to(tl.float32)
        dt_raw = tl.load(delta_rows + idx[None, :], mask=m2, other=0.0).to(tl.float32)
        dtn = tl.load(delta_rows + idx_next[None, :], mask=nmask_next[None, :], other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt_raw = dt_raw + bias[:, None]
            dtn = dtn + bias[:, None]
        if SOFTPLUS:
            dt = softplus(dt_raw)
            dtn = softplus(dtn)
        else:
            dt = dt_raw
        dt = tl.where(m2, dt, 0.0)
        dtn = tl.where(nmask_next[None, :], dtn, 0.0)
        dtu = dt * uv
        a = tl.exp2(dt[:, None, :] * A2[:, :, None])
        a_next = tl.exp2(dtn[:, None, :] * A2[:, :, None])
        nl_mask = n_mask[:, None] & m2
        if VAR_B:
            Bv = tl.load(B_ptr + B_off + n_offs[:, None] * seqlen + idx[None, :], mask=nl_mask,
                         other=0.0).to(tl.float32)
            bu = dtu[:, None, :] * Bv[None, :, :]
        else:
            bu = dtu[:, None, :] * Bc[:, :, None]
        h0 = tl.load(state_rows + (c - 1) * dstate, mask=dn_mask & (c > 0), other=0.0)
        _, hs = tl.associative_scan((a, tl.where(first, bu + a * h0[:, :, None], bu)), axis=2,
                                    combine_fn=_first_order_combine)
        if VAR_C:
            Cv = tl.load(C_ptr + C_off + n_offs[:, None] * seqlen + idx[None, :], mask=nl_mask,
                         other=0.0).to(tl.float32)
            C3 = Cv[None, :, :]
        else:
            C3 = Cc[:, :, None]
        dy = tl.load(dout_rows + idx[None, :], mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:
            y = tl.sum(hs * C3, axis=1)
            if HAS_D:
                y = y + Dv[:, None] * uv
            zv = tl.load(z_ptr + pid_b * stride_z_b + d_offs[:, None] * stride_z_d + idx[None, :], mask=m2,
                         other=0.0).to(tl.float32)
            sig = 1.0 / (1.0 + tl.exp(-zv))
            dz = dy * y * sig * (1.0 + zv * (1.0 - sig))
            tl.store(dz_ptr + grad_rows + idx[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m2)
            dy = dy * zv * sig
        if HAS_D:
            dD_acc += tl.sum(dy * uv, axis=1)
            du = dy * Dv[:, None]
        else:
            du = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        if VAR_C:
            dCv = tl.sum(hs * dy[:, None, :], axis=0)
            tl.atomic_add(dC_ptr + C_off + n_offs[:, None] * seqlen + idx[None, :], dCv, mask=nl_mask)
        else:
            dC_acc += tl.sum(hs * dy[:, None, :], axis=2)
        w = dy[:, None, :] * C3
        w = tl.where(last, w + a_next * g_carry[:, :, None], w)
        _, g = tl.associative_scan((a_next, w), axis=2, combine_fn=_first_order_combine, reverse=True)
        g_carry = tl.sum(tl.where(first, g, 0.0), axis=2)
        if VAR_B:
            gB = tl.sum(g * Bv[None, :, :], axis=1)
            dBv = tl.sum(g * dtu[:, None, :], axis=0)
            tl.atomic_add(dB_ptr + B_off + n_offs[:, None] * seqlen + idx[None, :], dBv, mask=nl_mask)
        else:
            gB = tl.sum(g * Bc[:, :, None], axis=1)
            dB_acc += tl.sum(g * dtu[:, None, :], axis=2)
        du = du + gB * dt
        q = g * (hs - bu)
        ddt = gB * uv + tl.sum(q * A[:, :, None], axis=1)
        dA_acc += tl.sum(q * dt[:, None, :], axis=2)
        if SOFTPLUS:
            ddt = tl.where(dt_raw <= 20.0, ddt / (1.0 + tl.exp(-dt_raw)), ddt)
        ddt = tl.where(m2, ddt, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + grad_rows + idx[None, :], du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddelta_ptr + grad_rows + idx[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)

    part_rows = (pid_b * dim + d_offs[:, None]) * dstate + n_offs[None, :]
    tl.store(dA_ptr + part_rows, dA_acc, mask=dn_mask)
    if not VAR_B:
        tl.store(dB_ptr + part_rows, dB_acc, mask=dn_mask)
    if not VAR_C:
        tl.store(dC_ptr + part_rows, dC_acc, mask=dn_mask)
    if HAS_D:
        tl.store(dD_ptr + pid_b * dim + d_offs, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * dim + d_offs, dbias_acc)


def _pow2_divisor(n: int, limit: int) -> int:
    """Largest power of two that divides n and is at most limit."""
    p = 1
    while p * 2 <= limit and n % (p * 2) == 0:
        p *= 2
    return p


def _block_l(seqlen: int) -> int:
    """Chunk length; the forward and backward kernels must use the same one (states are per chunk)."""
    if interpreting():
        return 8
    return min(64, max(16, triton.next_power_of_2(seqlen)))


def _config(dim: int, dstate: int, block_l: int, per_group: int, backward: bool):
    """(BLOCK_D, BLOCK_N, num_warps) for a launch.

    Under the interpreter the tiles are tiny (each scan element costs a Python call) and short chunks make small
    tests cover several chunks and several channel blocks. On GPU a (BLOCK_D, BLOCK_N, BLOCK_L) tile holds at most
    4 K (forward) or 1 K (backward, more live tiles) elements: compiled for sm_90 at dstate 16 and 4 warps, that is
    231 and 191 registers per thread without spills. Not tuned on hardware.
    """
    block_n = triton.next_power_of_2(dstate)
    if interpreting():
        return _pow2_divisor(per_group, 2), block_n, 1
    budget = 1024 if backward else 4096
    block_d = _pow2_divisor(per_group, max(1, budget // (block_n * block_l)))
    return block_d, block_n, 4


def _last_dim_contiguous(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if x is None or x.stride(-1) == 1:
        return x
    return x.contiguous()


def _as_groups(X: torch.Tensor) -> torch.Tensor:
    """Variable B/C as contiguous (batch, groups, dstate, seqlen); constant as contiguous (dim, dstate)."""
    if X.dim() == 3:
        X = X.unsqueeze(1)
    return X.contiguous()


class SelectiveScanTritonFn(torch.autograd.Function):
    """Autograd function of the Triton path."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        check_device(u, 'selective scan')
        u, delta, z = (_last_dim_contiguous(t) for t in (u, delta, z))
        B_in_dim, C_in_dim = B.dim(), C.dim()
        B, C = _as_groups(B), _as_groups(C)
        A = A.contiguous()
        batch, dim, seqlen = u.shape
        dstate = A.shape[1]
        per_group_B = dim // B.shape[1] if B.dim() == 4 else dim
        per_group_C = dim // C.shape[1] if C.dim() == 4 else dim
        per_group = math.gcd(per_group_B, per_group_C)
        block_l = _block_l(seqlen)
        block_d, block_n, num_warps = _config(dim, dstate, block_l, per_group, backward=False)
        nchunks = triton.cdiv(seqlen, block_l)
        out = torch.empty((batch, dim, seqlen), dtype=u.dtype, device=u.device)
        states = torch.empty((batch, dim, nchunks, dstate), dtype=torch.float32, device=u.device)
        zz = z if z is not None else u
        _selective_scan_fwd_kernel[(batch, dim // block_d)](
            u, delta, A, B, C, D if D is not None else A, zz, delta_bias if delta_bias is not None else A,
            out, states,
            seqlen, dim, dstate, nchunks, per_group_B, per_group_C,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), zz.stride(0), zz.stride(1),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
            VAR_B=B.dim() == 4, VAR_C=C.dim() == 4, REVERSE=bool(reverse),
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l, num_warps=num_warps,
        )
        last_state = states[:, :, -1].contiguous()
        ctx.mark_non_differentiable(last_state)
        ctx.block_l = block_l
        ctx.flags = (bool(delta_softplus), bool(reverse), B_in_dim, C_in_dim, per_group_B, per_group_C, per_group)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, _dlast):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        softplus, reverse, B_in_dim, C_in_dim, per_group_B, per_group_C, per_group = ctx.flags
        dout = _last_dim_contiguous(dout)
        batch, dim, seqlen = u.shape
        dstate = A.shape[1]
        block_l = ctx.block_l
        block_d, block_n, num_warps = _config(dim, dstate, block_l, per_group, backward=True)
        nchunks_fwd = states.shape[2]
        f32 = dict(dtype=torch.float32, device=u.device)
        du = torch.empty((batch, dim, seqlen), dtype=u.dtype, device=u.device)
        ddelta = torch.empty((batch, dim, seqlen), dtype=delta.dtype, device=u.device)
        dA = torch.empty((batch, dim, dstate), **f32)
        dB = torch.zeros(B.shape, **f32) if B.dim() == 4 else torch.empty((batch, dim, dstate), **f32)
        dC = torch.zeros(C.shape, **f32) if C.dim() == 4 else torch.empty((batch, dim, dstate), **f32)
        dD = torch.empty((batch, dim), **f32) if D is not None else None
        dbias = torch.empty((batch, dim), **f32) if delta_bias is not None else None
        dz = torch.empty((batch, dim, seqlen), dtype=z.dtype, device=u.device) if z is not None else None
        zz = z if z is not None else u
        _selective_scan_bwd_kernel[(batch, dim // block_d)](
            u, delta, A, B, C, D if D is not None else A, zz, delta_bias if delta_bias is not None else A,
            dout, states,
            du, ddelta, dA, dB, dC, dD if dD is not None else dA, dbias if dbias is not None else dA,
            dz if dz is not None else du,
            seqlen, dim, dstate, nchunks_fwd, per_group_B, per_group_C,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), zz.stride(0), zz.stride(1),
            dout.stride(0), dout.stride(1),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
            VAR_B=B.dim() == 4, VAR_C=C.dim() == 4, REVERSE=reverse,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l, num_warps=num_warps,
        )
        dA = dA.sum(0).to(A.dtype)
        dB = dB.sum(0) if B.dim() == 2 else (dB.squeeze(1) if B_in_dim == 3 else dB)
        dC = dC.sum(0) if C.dim() == 2 else (dC.squeeze(1) if C_in_dim == 3 else dC)
        dB, dC = dB.to(B.dtype), dC.to(C.dtype)
        dD = dD.sum(0).to(D.dtype) if dD is not None else None
        dbias = dbias.sum(0).to(delta_bias.dtype) if dbias is not None else None
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None, None


def selective_scan_triton(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                          D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                          delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                          reverse: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Selective scan on the Triton path; arguments as :func:`visionzoo.ops.selective_scan` (validated there).

    Returns:
        ``(out, last_state)``: out (batch, dim, seqlen) in ``u``'s dtype, last_state (batch, dim, dstate) float32.
    """
    return SelectiveScanTritonFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
