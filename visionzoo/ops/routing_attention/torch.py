"""Bi-level routing attention in plain PyTorch, with a hand-written backward: the path for CPU tensors.

Design (two formulations, by the fraction of regions routed):

* Sparse routing (the usual case: BiFormer's stages 1 and 2, its detection and segmentation settings): q, k and v
  are laid out once as contiguous rows ordered (batch, head, region) of (tokens, dim); the routed key regions of a
  query row are rows at known offsets. Query rows are processed a chunk at a time, the chunk sized so that one
  logits buffer holds about ``_CHUNK_ELEMENTS`` numbers: ``index_select`` gathers the chunk's routed key/value rows
  (already contiguous as (topk * tokens, dim) per query row), then one dense attention per region and head
  (``bmm``, softmax, ``bmm``). The forward pass keeps only its inputs (views of the projection output in
  BiFormer, held anyway): no routed copy of K or V survives a chunk. The backward pass recomputes each chunk's
  probabilities, forms ``dS = P * (dP - rowsum(dP * P))`` (PyTorch's fused softmax backward), and adds the routed
  keys' and values' gradients to their regions with ``index_add_``. The official gather instead differentiates
  through an expanded (regions x regions) view, whose backward allocates and fills a zero tensor ``regions``
  times the size of K and V.
* Dense routing (at least ``_DENSE_MIN_FRACTION`` of the regions routed, e.g. BiFormer's stage 3 at 224²: 16 of
  49): attention over the whole padded map with a boolean (tokens x tokens) routing mask, on PyTorch's fused CPU
  attention kernel (``F.scaled_dot_product_attention``, which keeps no score matrix for backward). Computing the
  masked-out logits then costs less than gathering the routed ones.

Math runs in float32 (float64 for float64 inputs); outputs and gradients take the inputs' dtypes.
"""
import torch
import torch.nn.functional as F

__all__ = ['routing_attention_torch']

# Numbers in one (regions, heads, tokens, topk * tokens) logits buffer of a chunk: 2**18 float32 (1 MiB) keeps a
# chunk's buffers (logits, probabilities, their gradients, gathered keys and values) near the cache, as in the
# neighbourhood attention path.
_CHUNK_ELEMENTS = 1 << 18
# Routed fraction of the regions from which the dense masked formulation is used. Measured on 2 CPU cores at batch
# 8 (forward + backward): 16 of 49 regions (14 x 14 map, 8 heads): dense 20 ms, chunked 88 ms; 4 of 49 (28 x 28 map,
# 4 heads): dense 110 ms, chunked 64 ms.
_DENSE_MIN_FRACTION = 0.25


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _Layout:
    """Region geometry of a (batch, height, width, heads, dim) map cut into n_win x n_win regions, with rows
    ordered (batch, head, region): row ``(b * heads + h) * regions + r`` holds the tokens of region r for head h."""

    def __init__(self, q: torch.Tensor, n_win: int):
        self.batch, self.height, self.width, self.heads, _ = q.shape
        self.n_win = n_win
        self.rh, self.rw = -(-self.height // n_win), -(-self.width // n_win)
        self.regions, self.tokens = n_win * n_win, self.rh * self.rw

    def rows(self, x: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
        """x zero-padded and laid out as contiguous (batch * heads * regions, tokens, dim) rows of ``cdt``."""
        s, rh, rw = self.n_win, self.rh, self.rw
        x = F.pad(x.to(cdt), (0, 0, 0, 0, 0, s * rw - self.width, 0, s * rh - self.height))
        x = x.view(self.batch, s, rh, s, rw, self.heads, -1).permute(0, 5, 1, 3, 2, 4, 6)
        return x.reshape(self.batch * self.heads * self.regions, self.tokens, -1)

    def grid(self, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Rows back to a contiguous (batch, height, width, heads, dim) tensor of ``like``'s dtype."""
        s, rh, rw = self.n_win, self.rh, self.rw
        x = rows.view(self.batch, self.heads, s, s, rh, rw, -1).permute(0, 2, 4, 3, 5, 1, 6)
        x = x.reshape(self.batch, s * rh, s * rw, self.heads, -1)[:, :self.height, :self.width]
        return x.to(like.dtype).contiguous()

    def routed_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Row numbers (batch * heads * regions, topk) of the routed key regions of every query row."""
        first = torch.arange(self.batch * self.heads, device=index.device).mul_(self.regions).view(
            self.batch, self.heads, 1, 1)
        return (index.unsqueeze(1) + first).view(-1, index.shape[-1])

    def chunks(self, topk: int):
        """(start, end) ranges of query rows processed together."""
        step = max(1, _CHUNK_ELEMENTS // (self.tokens * topk * self.tokens))
        total = self.batch * self.heads * self.regions
        return [(s, min(s + step, total)) for s in range(0, total, step)]


def _gather(rows: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
    """Rows ``routed`` (n, topk) of (R, tokens, dim) as contiguous (n, topk * tokens, dim)."""
    return rows.index_select(0, routed.reshape(-1)).view(routed.shape[0], -1, rows.shape[-1])


def _scatter_add(buffer: torch.Tensor, values: torch.Tensor, routed: torch.Tensor) -> None:
    """Add ``values`` (n, topk * tokens, dim) to rows ``routed`` (n, topk) of a (R, tokens, dim) buffer."""
    buffer.index_add_(0, routed.reshape(-1), values.view(-1, buffer.shape[1], buffer.shape[2]))


class RoutingAttentionFn(torch.autograd.Function):
    """Chunked routed attention; the backward pass recomputes each chunk's logits and probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, index, n_win, scale):
        cdt = _compute_dtype(q)
        layout = _Layout(q, n_win)
        qr, kr, vr = (layout.rows(t, cdt) for t in (q, k, v))
        qr.mul_(scale)
        routed = layout.routed_rows(index)
        out = torch.empty(vr.shape, dtype=cdt, device=q.device)
        for s, e in layout.chunks(index.shape[-1]):
            probs = torch.softmax(torch.bmm(qr[s:e], _gather(kr, routed[s:e]).transpose(1, 2)), -1)
            torch.bmm(probs, _gather(vr, routed[s:e]), out=out[s:e])
        ctx.save_for_backward(q, k, v, index)
        ctx.config = (n_win, scale)
        return layout.grid(out, q)

    @staticmethod
    def backward(ctx, dout):
        with torch.autocast(dout.device.type, enabled=False):  # float32 products also when run under autocast
            return RoutingAttentionFn._backward(ctx, dout)

    @staticmethod
    def _backward(ctx, dout):
        q, k, v, index = ctx.saved_tensors
        n_win, scale = ctx.config
        cdt = _compute_dtype(q)
        layout = _Layout(q, n_win)
        qr, kr, vr, dor = (layout.rows(t, cdt) for t in (q, k, v, dout))
        qr.mul_(scale)
        routed = layout.routed_rows(index)
        dq = torch.empty(qr.shape, dtype=cdt, device=q.device)
        dk, dv = torch.zeros_like(kr), torch.zeros_like(vr)
        for s, e in layout.chunks(index.shape[-1]):
            kg, vg, doc = _gather(kr, routed[s:e]), _gather(vr, routed[s:e]), dor[s:e]
            probs = torch.softmax(torch.bmm(qr[s:e], kg.transpose(1, 2)), -1)
            _scatter_add(dv, torch.bmm(probs.transpose(1, 2), doc), routed[s:e])
            ds = torch._softmax_backward_data(torch.bmm(doc, vg.transpose(1, 2)), probs, -1, cdt)
            torch.bmm(ds, kg, out=dq[s:e])
            _scatter_add(dk, torch.bmm(ds.transpose(1, 2), qr[s:e]), routed[s:e])
        dq.mul_(scale)
        return layout.grid(dq, q), layout.grid(dk, k), layout.grid(dv, v), None, None, None


def _dense_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, n_win: int,
                  scale: float) -> torch.Tensor:
    """Attention over the whole zero-padded map, masked to the routed regions; differentiated by autograd."""
    cdt = _compute_dtype(q)
    layout = _Layout(q, n_win)
    s, rh, rw = n_win, layout.rh, layout.rw
    batch, heads = layout.batch, layout.heads

    def flat(x):  # (batch, heads, padded tokens, dim) view of the padded map, row-major tokens
        x = F.pad(x.to(cdt), (0, 0, 0, 0, 0, s * rw - layout.width, 0, s * rh - layout.height))
        return x.flatten(1, 2).transpose(1, 2)
    routed = torch.zeros(batch, layout.regions, layout.regions, dtype=torch.bool, device=q.device)
    routed.scatter_(2, index, True)
    ys, xs = torch.meshgrid(torch.arange(s * rh, device=q.device), torch.arange(s * rw, device=q.device),
                            indexing='ij')
    region = ((ys // rh) * s + xs // rw).reshape(-1)
    mask = routed[:, region][:, :, region].unsqueeze(1)  # (batch, 1, tokens, tokens)
    out = F.scaled_dot_product_attention(flat(q), flat(k), flat(v), attn_mask=mask, scale=scale)
    out = out.transpose(1, 2).reshape(batch, s * rh, s * rw, heads, -1)[:, :layout.height, :layout.width]
    return out.to(q.dtype).contiguous()


def routing_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, n_win: int,
                            scale: float) -> torch.Tensor:
    """Routed attention (arguments validated, routing ``index`` (batch, n_win**2, topk)); output in ``q``'s
    dtype. Chunked with the scatter backward, or dense with a routing mask when at least
    ``_DENSE_MIN_FRACTION`` of the regions are routed."""
    if index.shape[-1] >= _DENSE_MIN_FRACTION * n_win * n_win:
        return _dense_masked(q, k, v, index, n_win, scale)
    return RoutingAttentionFn.apply(q, k, v, index, n_win, scale)
