"""Selective scan in plain PyTorch: the path for CPU tensors and for any device without Triton.

Design (the same plan as the CUDA and Triton kernels, written with whole-tensor PyTorch operations):

* Inputs go to a time-major layout: scalars per position as ``(seqlen, batch, dim)``, the hidden state of a
  chunk as ``(chunk, batch, dstate, dim)``. One time step is then a contiguous slab, so the recurrence
  ``h_t = a_t * h_{t-1} + b_t`` is one in-place ``addcmul_`` per step, vectorised over batch, dstate and dim;
  contractions over ``dstate`` are batched matrix products (variable ``B``/``C``) or reductions over an outer
  axis (constant ``B``/``C``, ``A``).
* The sequence is processed in chunks sized so that a chunk's buffers stay in cache. The forward pass keeps
  only the state at the end of each chunk; the backward pass walks the chunks last to first, recomputes the
  chunk's states from the stored boundary state, and runs the reverse recurrence for the state gradient.
* Nothing divides by a product of decays: every quantity is a product of factors ``exp(delta * A)``, each
  at most one for the usual negative ``A``, so long sequences do not overflow or lose precision.

The reverse direction (``reverse=True``) is handled by laying the inputs out back to front in the same copy
that makes them time-major, so it costs nothing extra.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ['selective_scan_torch']

# Elements of one (chunk, batch, dstate, dim) buffer. Four such buffers are live in the backward pass; 2**18
# float32 elements (1 MiB each) keeps them within a core's L2 plus the shared L3 on common CPUs.
_CHUNK_ELEMENTS = 1 << 18
_MAX_CHUNK = 64


def _chunk_len(batch: int, dim: int, dstate: int, seqlen: int) -> int:
    """Positions per chunk: as many as fit the element budget, at least one."""
    return max(1, min(seqlen, _MAX_CHUNK, _CHUNK_ELEMENTS // (batch * dim * dstate)))


def _time_major(x: torch.Tensor, reverse: bool) -> torch.Tensor:
    """(batch, dim, seqlen) -> a new contiguous (seqlen, batch, dim) tensor, back to front when ``reverse``.

    A batch-major ``x`` is copied as the transpose of a (batch * dim, seqlen) matrix, which PyTorch does in
    cache-sized blocks (about 3x faster on CPU than copying the 3-D permutation). A transposed view of a
    (batch, seqlen, dim) tensor, as a Linear layer's output gives, is already close to the target layout: its
    permutation is copied row by row.
    """
    batch, dim, seqlen = x.shape
    if x.stride(1) < x.stride(2):
        out = x.permute(2, 0, 1).contiguous()
    else:
        out = x.reshape(batch * dim, seqlen).t().contiguous().view(seqlen, batch, dim)
    if reverse:
        return out.flip(0)
    # always a new tensor (callers update it in place); contiguous() returns x itself when no copy is needed
    return out.clone() if out.data_ptr() == x.data_ptr() else out


def _in_slices(x: torch.Tensor, fn, axis: int = 0, elements: int = _CHUNK_ELEMENTS) -> torch.Tensor:
    """Update ``x`` in place one slice along ``axis`` at a time (about ``elements`` each), so that the temporaries
    of the elementwise ``fn(slice, start, stop)`` stay slice-sized."""
    step = max(1, elements * x.shape[axis] // max(x.numel(), 1))
    for i in range(0, x.shape[axis], step):
        j = min(i + step, x.shape[axis])
        fn(x.narrow(axis, i, j - i), i, j)
    return x


def _batch_major(x: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Inverse of :func:`_time_major`: (seqlen, batch, dim) -> contiguous (batch, dim, seqlen)."""
    seqlen, batch, dim = x.shape
    if reverse:
        x = x.flip(0)
    return x.reshape(seqlen, batch * dim).t().contiguous().view(batch, dim, seqlen)


class _Operand:
    """``B`` or ``C`` in the layout the chunk loop uses.

    Variable inputs ``(batch, [groups,] dstate, seqlen)`` become ``(seqlen, batch, dstate, groups)``; a constant
    ``(dim, dstate)`` becomes ``(dstate, dim)``. A state chunk ``S`` of shape (chunk, batch, dstate, dim) is seen
    as (chunk, batch, dstate, groups, dim // groups) so that channel ``c`` meets group ``c // (dim / groups)``.
    """

    def __init__(self, X: torch.Tensor, dim: int, cdt: torch.dtype, reverse: bool):
        self.variable = X.dim() >= 3
        if self.variable:
            X4 = X if X.dim() == 4 else X.unsqueeze(1)
            self.groups = X4.shape[1]
            t = X4.to(cdt).permute(3, 0, 2, 1)
            if reverse:
                t = t.flip(0)
            self.data = t.contiguous()
        else:
            self.groups = 1
            self.data = X.to(cdt).t().contiguous()
        self.dim = dim
        self.per_group = dim // self.groups

    def chunk(self, t0: int, t1: int) -> torch.Tensor:
        """The operand for positions t0..t1-1, broadcastable against a 5-D state view."""
        if self.variable:
            return self.data[t0:t1].unsqueeze(-1)
        return self.data[None, None, :, None, :]

    def view5(self, S: torch.Tensor) -> torch.Tensor:
        """(chunk, batch, dstate, dim) -> (chunk, batch, dstate, groups, dim // groups)."""
        return S.view(S.shape[0], S.shape[1], S.shape[2], self.groups, self.per_group)

    def per_position(self, v: torch.Tensor) -> torch.Tensor:
        """(chunk, batch, dim) -> (chunk, batch, 1, groups, dim // groups)."""
        return v.view(v.shape[0], v.shape[1], 1, self.groups, self.per_group)

    def sum_states(self, S: torch.Tensor, t0: int, t1: int, out: torch.Tensor, tmp: torch.Tensor) -> None:
        """out (chunk, batch, dim) = sum over dstate of S * operand."""
        T, b, n, d = S.shape
        if self.variable and self.groups == 1:
            torch.bmm(self.data[t0:t1].view(T * b, 1, n), S.view(T * b, n, d), out=out.view(T * b, 1, d))
            return
        torch.mul(self.view5(S), self.chunk(t0, t1), out=self.view5(tmp))
        torch.sum(tmp, dim=2, out=out)

    def grad_chunk(self, S: torch.Tensor, v: torch.Tensor, t0: int, t1: int, grad: torch.Tensor,
                   tmp: torch.Tensor) -> None:
        """Gradient of sum(v * sum_n S * operand) with respect to the operand, for positions t0..t1-1.

        Variable operands write (chunk, batch, dstate, groups) into ``grad[t0:t1]``; a constant one adds its
        (batch, dstate, dim) partial sum into ``grad``.
        """
        T, b, n, d = S.shape
        if not self.variable:
            torch.mul(S, v[:, :, None, :], out=tmp)
            grad.add_(tmp.sum(0))
        elif self.groups == 1:
            torch.bmm(S.view(T * b, n, d), v.reshape(T * b, d, 1), out=grad[t0:t1].view(T * b, n, 1))
        else:
            torch.mul(self.view5(S), self.per_position(v), out=self.view5(tmp))
            torch.sum(self.view5(tmp), dim=-1, out=grad[t0:t1])

    def new_grad(self, batch: int, seqlen: int, dstate: int) -> torch.Tensor:
        if self.variable:
            return self.data.new_zeros((seqlen, batch, dstate, self.groups))
        return self.data.new_zeros((batch, dstate, self.dim))

    def finish_grad(self, grad: torch.Tensor, dtype: torch.dtype, ndim: int, reverse: bool) -> torch.Tensor:
        """Back to the caller's layout (``ndim`` dimensions) and dtype."""
        if not self.variable:
            return grad.sum(0).t().to(dtype)
        if reverse:
            grad = grad.flip(0)
        grad = grad.permute(1, 3, 2, 0)  # (batch, groups, dstate, seqlen)
        if ndim == 3:
            grad = grad.squeeze(1)
        return grad.to(dtype).contiguous()


class _Rows:
    """A (chunk, batch, dstate, dim) buffer with the views of its rows made once: the per-step loops are bound by
    per-call overhead, so they index these prebuilt views instead of slicing the buffer at every step."""

    def __init__(self, buf: torch.Tensor):
        self.buf = buf
        self.rows = buf.unbind(0)


def _recompute_chunk(k: int, T: int, dtT: torch.Tensor, dtuT: torch.Tensor, AT: torch.Tensor, Bop: _Operand,
                     ckpt: Optional[torch.Tensor], a_buf: _Rows, s_buf: _Rows):
    """Decays and states of chunk k; returns (t0, t1, a, S) with S[i] = h_{t0+i}."""
    seqlen = dtT.shape[0]
    t0 = k * T
    t1 = min(seqlen, t0 + T)
    Tc = t1 - t0
    a = a_buf.buf[:Tc]
    S = s_buf.buf[:Tc]
    torch.mul(dtT[t0:t1, :, None, :], AT, out=a)
    a.exp_()
    torch.mul(Bop.per_position(dtuT[t0:t1]), Bop.chunk(t0, t1), out=Bop.view5(S))
    if k > 0:
        S[0].addcmul_(a[0], ckpt[k - 1])
    s_steps, a_steps = s_buf.rows, a_buf.rows
    for i in range(1, Tc):
        s_steps[i].addcmul_(a_steps[i], s_steps[i - 1])
    return t0, t1, a, S


def _scan_forward(dtT, dtuT, AT, Bop: _Operand, Cop: _Operand, T: int):
    """Forward chunk loop. Returns yT (seqlen, batch, dim) and the chunk-end states (nchunks, batch, dstate, dim).

    ``yT`` is written into ``dtuT``'s memory: chunk k reads its ``delta * u`` before writing its outputs, and later
    chunks read only later positions.
    """
    seqlen, batch, dim = dtT.shape
    dstate = AT.shape[0]
    nchunks = math.ceil(seqlen / T)
    ckpt = dtT.new_empty((nchunks, batch, dstate, dim))
    yT = dtuT
    a_buf = _Rows(dtT.new_empty((T, batch, dstate, dim)))
    s_buf = _Rows(torch.empty_like(a_buf.buf))
    tmp = torch.empty_like(a_buf.buf)
    for k in range(nchunks):
        t0, t1, _, S = _recompute_chunk(k, T, dtT, dtuT, AT, Bop, ckpt, a_buf, s_buf)
        ckpt[k].copy_(S[-1])
        Cop.sum_states(S, t0, t1, yT[t0:t1], tmp[:t1 - t0])
    return yT, ckpt


def _scan_backward(dyT, dtT, dtuT, AT, Bop: _Operand, Cop: _Operand, ckpt, T: int, need_A: bool, need_B: bool,
                   need_C: bool):
    """Backward chunk loop.

    Returns ``(d_dtu, d_dt_A, dA, dB, dC)``: the gradient with respect to ``delta * u`` and the part of the
    gradient with respect to ``delta`` that flows through the decay (both (seqlen, batch, dim)), the partial sums
    (batch, dstate, dim) for ``A``, and the gradients of ``B`` and ``C`` in :class:`_Operand` layout (or None).
    """
    seqlen, batch, dim = dtT.shape
    dstate = AT.shape[0]
    nchunks = ckpt.shape[0]
    a_buf = _Rows(dtT.new_empty((T, batch, dstate, dim)))
    s_buf = _Rows(torch.empty_like(a_buf.buf))
    g_buf = _Rows(torch.empty_like(a_buf.buf))
    q_buf = torch.empty_like(a_buf.buf)
    tmp_buf = torch.empty_like(a_buf.buf)
    carry = dtT.new_empty((batch, dstate, dim))
    d_dtu = torch.empty_like(dtT)
    d_dt_A = torch.empty_like(dtT)
    dA = dtT.new_zeros((batch, dstate, dim)) if need_A else None
    dB = Bop.new_grad(batch, seqlen, dstate) if need_B else None
    dC = Cop.new_grad(batch, seqlen, dstate) if need_C else None
    for k in range(nchunks - 1, -1, -1):
        t0, t1, a, S = _recompute_chunk(k, T, dtT, dtuT, AT, Bop, ckpt, a_buf, s_buf)
        Tc = t1 - t0
        tmp = tmp_buf[:Tc]
        dy = dyT[t0:t1]
        if need_C:
            Cop.grad_chunk(S, dy, t0, t1, dC, tmp)
        # g_t = dL/dh_t = C_t * dy_t + a_{t+1} * g_{t+1}
        G = g_buf.buf[:Tc]
        torch.mul(Cop.per_position(dy), Cop.chunk(t0, t1), out=Cop.view5(G))
        if k < nchunks - 1:
            G[Tc - 1].add_(carry)
        g_steps, a_steps = g_buf.rows, a_buf.rows
        for i in range(Tc - 2, -1, -1):
            g_steps[i].addcmul_(a_steps[i + 1], g_steps[i + 1])
        if k > 0:
            torch.mul(a[0], G[0], out=carry)
        # dL/d(delta*u)_t = sum_n g_t * B_t
        Bop.sum_states(G, t0, t1, d_dtu[t0:t1], tmp)
        if need_B:
            Bop.grad_chunk(G, dtuT[t0:t1], t0, t1, dB, tmp)
        # q_t = dL/d(delta_t * A) = g_t * h_{t-1} * a_t
        Q = q_buf[:Tc]
        if Tc > 1:
            torch.mul(G[1:], S[:-1], out=Q[1:])
        if k > 0:
            torch.mul(G[0], ckpt[k - 1], out=Q[0])
        else:
            Q[0].zero_()
        Q.mul_(a)
        torch.mul(Q, AT, out=tmp)
        torch.sum(tmp, dim=2, out=d_dt_A[t0:t1])
        if need_A:
            torch.mul(Q, dtT[t0:t1, :, None, :], out=tmp)
            dA.add_(tmp.sum(0))
    return d_dtu, d_dt_A, dA, dB, dC


class SelectiveScanTorchFn(torch.autograd.Function):
    """Autograd function of the PyTorch path (hand-written backward, chunk-boundary checkpoints)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, keep):
        cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
        batch, dim, seqlen = u.shape
        dstate = A.shape[1]
        # keep: whether autograd will call backward. Without (inference) nothing is kept for it and buffers are
        # reused in place, so that the peak memory stays a few (seqlen, batch, dim) tensors.
        dtT = _time_major(delta.to(cdt), reverse)
        if delta_bias is not None:
            dtT.add_(delta_bias.to(cdt))
        dt_rawT = dtT if delta_softplus and keep else None
        if delta_softplus:
            dtT = F.softplus(dtT) if keep else _in_slices(dtT, lambda t, i, j: t.copy_(F.softplus(t)))
        uf = u.to(cdt)
        uT = _time_major(uf, reverse)
        dtuT = dtT * uT if keep else uT.mul_(dtT)
        AT = A.to(cdt).t().contiguous()
        Bop = _Operand(B, dim, cdt, reverse)
        Cop = _Operand(C, dim, cdt, reverse)
        T = _chunk_len(batch, dim, dstate, seqlen)
        yT, ckpt = _scan_forward(dtT, dtuT, AT, Bop, Cop, T)  # yT overwrites dtuT
        del dtuT
        if not keep:
            del dtT
        # (batch, dim, seqlen) view of the time-major result: no copy in the forward direction, and for a caller
        # whose next step is a Linear layer over dim, (batch, seqlen, dim) is then already contiguous for batch 1
        y = (yT.flip(0) if reverse else yT).permute(1, 2, 0)
        del yT
        if D is not None:
            y = y.addcmul_(D.to(cdt)[:, None], uf)
        if z is None:
            out = y
        elif keep:
            out = y * F.silu(z.to(cdt))
        else:
            zf = z.to(cdt)
            out = _in_slices(y, lambda t, i, j: t.mul_(F.silu(zf.narrow(2, i, j - i))), axis=2)
        last_state = ckpt[-1].transpose(1, 2).contiguous()
        ctx.mark_non_differentiable(last_state)
        ctx.T = T
        ctx.cdt = cdt
        ctx.reverse = reverse
        ctx.Bop, ctx.Cop = (Bop, Cop) if keep else (None, None)
        ctx.meta = (u.dtype, delta.dtype, A.dtype, B.dtype, B.dim(), C.dtype, C.dim(),
                    None if delta_bias is None else delta_bias.dtype)
        if keep:
            ctx.save_for_backward(u, uT, dtT, AT, ckpt, dt_rawT, D, z, y if z is not None else None)
        return out.to(u.dtype), last_state

    @staticmethod
    def backward(ctx, dout, _dlast):
        u, uT, dtT, AT, ckpt, dt_rawT, D, z, y = ctx.saved_tensors
        u_dtype, delta_dtype, A_dtype, B_dtype, B_ndim, C_dtype, C_ndim, bias_dtype = ctx.meta
        cdt, reverse = ctx.cdt, ctx.reverse
        need = ctx.needs_input_grad
        dout = dout.to(cdt)
        dz = None
        if z is not None:
            zf = z.to(cdt)
            sig = torch.sigmoid(zf)
            if need[6]:
                dz = (dout * y * sig * (1 + zf * (1 - sig))).to(z.dtype)
            dy = dout * zf * sig
        else:
            dy = dout
        dyT = _time_major(dy, reverse)
        d_dtuT, d_dt_AT, dA, dB, dC = _scan_backward(dyT, dtT, uT * dtT, AT, ctx.Bop, ctx.Cop, ckpt, ctx.T,
                                                     need[2], need[3], need[4])
        du = dd = dD = ddb = None
        if need[0]:
            duT = d_dtuT * dtT
            du = _batch_major(duT, reverse)
            if D is not None:
                du.addcmul_(D.to(cdt)[:, None], dy)
            du = du.to(u_dtype)
        if need[1] or need[7]:
            ddtT = torch.addcmul(d_dt_AT, d_dtuT, uT)
            if dt_rawT is not None:  # softplus (threshold 20): identity above it, sigmoid-weighted below
                ddtT = torch.where(dt_rawT <= 20.0, ddtT * torch.sigmoid(dt_rawT), ddtT)
            ddt = _batch_major(ddtT, reverse)
            if need[1]:
                dd = ddt.to(delta_dtype)
            if need[7]:
                ddb = ddt.sum((0, 2)).to(bias_dtype)
        if need[5]:
            dD = (dy * u.to(cdt)).sum((0, 2)).to(D.dtype)
        dA = dA.sum(0).t().to(A_dtype) if dA is not None else None
        dB = ctx.Bop.finish_grad(dB, B_dtype, B_ndim, reverse) if dB is not None else None
        dC = ctx.Cop.finish_grad(dC, C_dtype, C_ndim, reverse) if dC is not None else None
        return du, dd, dA, dB, dC, dD, dz, ddb, None, None, None


def selective_scan_torch(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                         D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                         delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                         reverse: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Selective scan on the PyTorch path; arguments as :func:`visionzoo.ops.selective_scan` (validated there).

    Returns:
        ``(out, last_state)``: out (batch, dim, seqlen) in ``u``'s dtype, last_state (batch, dim, dstate) in
        float32 (float64 for float64 ``u``).
    """
    keep = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (u, delta, A, B, C, D, z, delta_bias))
    return SelectiveScanTorchFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, keep)
