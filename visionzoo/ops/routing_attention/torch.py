"""Bi-level routing attention in plain PyTorch, with a hand-written backward: the path for CPU tensors.

Design:

* q, k and v are laid out region-major once, as (batch * regions, heads, tokens, dim) rows; the routed key regions
  of query region ``i`` of image ``b`` are rows ``b * regions + index[b, i]``.
* Query regions are processed a chunk at a time, the chunk sized so that one logits buffer holds about
  ``_CHUNK_ELEMENTS`` numbers: ``index_select`` gathers the chunk's routed key/value rows, then one dense attention
  per region (``(tokens, dim) @ (dim, topk * tokens)``, softmax, ``@ (topk * tokens, dim)``).
* The forward pass keeps only its inputs (views of the projection output in BiFormer, held anyway): no routed
  copy of K or V survives a chunk. The backward pass recomputes each chunk's probabilities, forms
  ``dS = P * (dP - rowsum(dP * P))`` (PyTorch's fused softmax backward), and adds the routed keys' and values'
  gradients to their regions with ``index_add_``. The official gather instead differentiates through an expanded
  (regions x regions) view, whose backward allocates and fills a zero tensor ``regions`` times the size of K and V.

Math runs in float32 (float64 for float64 inputs); outputs and gradients take the inputs' dtypes.
"""
import torch
import torch.nn.functional as F

__all__ = ['routing_attention_torch']

# Numbers in one (regions, heads, tokens, topk * tokens) logits buffer of a chunk: 2**18 float32 (1 MiB) keeps a
# chunk's buffers (logits, probabilities, their gradients, gathered keys and values) near the cache, as in the
# neighbourhood attention path.
_CHUNK_ELEMENTS = 1 << 18


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _Layout:
    """Region geometry of a (batch, height, width, heads, dim) map cut into n_win x n_win regions."""

    def __init__(self, q: torch.Tensor, n_win: int):
        self.batch, self.height, self.width, self.heads, _ = q.shape
        self.n_win = n_win
        self.rh, self.rw = -(-self.height // n_win), -(-self.width // n_win)
        self.regions, self.tokens = n_win * n_win, self.rh * self.rw

    def rows(self, x: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
        """x zero-padded and laid out as contiguous (batch * regions, heads, tokens, dim) rows of ``cdt``."""
        s, rh, rw = self.n_win, self.rh, self.rw
        x = F.pad(x.to(cdt), (0, 0, 0, 0, 0, s * rw - self.width, 0, s * rh - self.height))
        x = x.view(self.batch, s, rh, s, rw, self.heads, -1).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(self.batch * self.regions, self.heads, self.tokens, -1)

    def grid(self, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Rows back to a contiguous (batch, height, width, heads, dim) tensor of ``like``'s dtype."""
        s, rh, rw = self.n_win, self.rh, self.rw
        x = rows.view(self.batch, s, s, self.heads, rh, rw, -1).permute(0, 1, 4, 2, 5, 3, 6)
        x = x.reshape(self.batch, s * rh, s * rw, self.heads, -1)[:, :self.height, :self.width]
        return x.to(like.dtype).contiguous()

    def chunks(self, topk: int):
        """(start, end) row ranges of query regions processed together."""
        step = max(1, _CHUNK_ELEMENTS // (self.heads * self.tokens * topk * self.tokens))
        total = self.batch * self.regions
        return [(s, min(s + step, total)) for s in range(0, total, step)]


def _routed_rows(index: torch.Tensor, regions: int) -> torch.Tensor:
    """Row numbers (batch * regions, topk) of the routed key regions of every query region."""
    offsets = torch.arange(index.shape[0], device=index.device).mul_(regions).view(-1, 1, 1)
    return (index + offsets).view(-1, index.shape[-1])


def _gather(rows: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
    """Rows ``routed`` (n, topk) of (R, heads, tokens, dim) as (n, heads, topk * tokens, dim)."""
    n, topk = routed.shape
    _, heads, tokens, dim = rows.shape
    picked = rows.index_select(0, routed.reshape(-1)).view(n, topk, heads, tokens, dim)
    return picked.transpose(1, 2).reshape(n, heads, topk * tokens, dim)


def _scatter_add(buffer: torch.Tensor, values: torch.Tensor, routed: torch.Tensor) -> None:
    """Add ``values`` (n, heads, topk * tokens, dim) to rows ``routed`` (n, topk) of a (R, heads, tokens, dim)
    buffer."""
    n, topk = routed.shape
    _, heads, tokens, dim = buffer.shape
    values = values.view(n, heads, topk, tokens, dim).transpose(1, 2).reshape(n * topk, heads, tokens, dim)
    buffer.index_add_(0, routed.reshape(-1), values)


class RoutingAttentionFn(torch.autograd.Function):
    """Chunked routed attention; the backward pass recomputes each chunk's logits and probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, index, n_win, scale):
        cdt = _compute_dtype(q)
        layout = _Layout(q, n_win)
        qr, kr, vr = (layout.rows(t, cdt) for t in (q, k, v))
        routed = _routed_rows(index, layout.regions)
        out = torch.empty(vr.shape, dtype=cdt, device=q.device)
        for s, e in layout.chunks(index.shape[-1]):
            probs = torch.softmax(torch.matmul(qr[s:e] * scale, _gather(kr, routed[s:e]).transpose(-1, -2)), -1)
            torch.matmul(probs, _gather(vr, routed[s:e]), out=out[s:e])
        ctx.save_for_backward(q, k, v, index)
        ctx.config = (n_win, scale)
        return layout.grid(out, q)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, index = ctx.saved_tensors
        n_win, scale = ctx.config
        cdt = _compute_dtype(q)
        layout = _Layout(q, n_win)
        qr, kr, vr, dor = (layout.rows(t, cdt) for t in (q, k, v, dout))
        routed = _routed_rows(index, layout.regions)
        dq = torch.empty(qr.shape, dtype=cdt, device=q.device)
        dk, dv = torch.zeros_like(kr), torch.zeros_like(vr)
        for s, e in layout.chunks(index.shape[-1]):
            qc, kg, vg, doc = qr[s:e] * scale, _gather(kr, routed[s:e]), _gather(vr, routed[s:e]), dor[s:e]
            probs = torch.softmax(torch.matmul(qc, kg.transpose(-1, -2)), -1)
            _scatter_add(dv, torch.matmul(probs.transpose(-1, -2), doc), routed[s:e])
            ds = torch._softmax_backward_data(torch.matmul(doc, vg.transpose(-1, -2)), probs, -1, cdt)
            torch.matmul(ds, kg, out=dq[s:e])
            _scatter_add(dk, torch.matmul(ds.transpose(-1, -2), qc), routed[s:e])
        dq.mul_(scale)
        return layout.grid(dq, q), layout.grid(dk, k), layout.grid(dv, v), None, None, None


def routing_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, n_win: int,
                            scale: float) -> torch.Tensor:
    """Chunked routed attention (arguments validated, routing ``index`` (batch, n_win**2, topk)); output in
    ``q``'s dtype."""
    return RoutingAttentionFn.apply(q, k, v, index, n_win, scale)
