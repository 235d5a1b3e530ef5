"""SLAB: simplified linear attention (SLA) and progressive re-parameterised BatchNorm (PRepBN).

Paper: "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch
Normalization", Guo, Chen, Tang, Wang, ICML 2024 (arXiv:2405.11582). Official code and weights:
https://github.com/xinghaochen/SLAB.

Four architectures, with the official state_dict layouts (official checkpoints load through
:func:`checkpoint_filter_fn`), built as the official training configs build them:

* ``slab_deit_*``: DeiT without a class token (average-pooled), SLA in every block;
* ``slab_pvt_tiny``: PVT with SLA in every stage and no spatial reduction inside the SLA (the official config's
  ``PVT_LA_SR_RATIOS=1111``), no final norm;
* ``slab_swin_*``: Swin whose "L" stages (1, 2) run SLA over full-map windows (56 at 224, clamped to the stage
  resolution) and whose "S" stages (3, 4) run shifted-window softmax attention with relative position bias;
* ``slab_cswin_tiny``: CSWin with global SLA (+ LePE) in stages 1-2 (the config's ``CSWIN_LA_SPLIT_SIZE``
  56-28 equals the stage resolution) and cross-shaped-window attention in stages 3-4.

Every norm is a :class:`PRepBN`: ``λ·LayerNorm + (1 − λ)·RepBN`` in training, λ going linearly from 1 to 0 over
``prepbn_steps`` training forwards (its counters ``iter``/``total_step``/``warm`` are state_dict buffers, as
official), RepBN alone in eval. :meth:`fuse` methods fold the eval-mode RepBN (a per-channel affine) into the
next Linear (qkv / q+kv / fc1 / PatchMerging reduction) or the previous conv (patch embeddings, CSWin merges);
norms whose output also feeds the residual stream or the features become a :class:`ChannelAffine`.
``visionzoo.fuse(model)`` calls them. The official repository calls ``merge_bn()`` but never implements it.

What differs from the official code:

* SLA (ReLU kernels, normaliser and the shared depthwise conv on v) always runs in float32 with autocast off, on
  any device (the official DeiT/Swin code only disables CUDA autocast and runs ``dwc`` outside; PVT/CSWin not at
  all);
* any input size: learned positional encodings are resized (bicubic; PVT's ``pos_embed`` bilinear as official)
  to the token grid or window; Swin pads the image to the patch size, maps to the window size and odd maps before
  patch merging (as the official detection backbone), CSWin pads stripes; padded tokens are masked out of the
  attention (the official detection code lets zero-padded tokens attend), so results on the real tokens do not
  depend on the padding; DeiT needs sides divisible by 16 and PVT by 32 (ValueError otherwise);
* a Swin window is clamped to the map per axis at run time, and its shift is dropped when the map fits in one
  window (the official classification rule, applied to the actual input instead of ``img_size``); as official,
  SLA ignores the shifted-window mask;
* RepBN runs BatchNorm1d on (tokens, channels) without transposes (same statistics);
* parameters the official forward never uses (DeiT ``cls_token``, CSWin ``attns.*.scale``) do not exist here and
  are dropped by the filter, as are the buffers recomputed here (``relative_position_index``, ``attn_mask``).
"""
import contextlib
import math
import threading
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (DropPath, Mlp, calculate_drop_path_rates, register_notrace_function, register_notrace_module,
                         to_2tuple, trunc_normal_)
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers.fuse import fold_affine_after, fold_affine_before
from ..layers.pos_embed import resample_grid_tokens
from ..utils.options import argument_error
from ._checkpoint import unwrap_state_dict
from ._contract import ClassifierMixin, check_output_fmt, checkpointed, init_linear_trunc_normal

torch.fx.wrap('resample_grid_tokens')  # FX tracing: the resampler returns early for an unchanged grid

__all__ = ['RepBN', 'PRepBN', 'ChannelAffine', 'simplified_linear_attention', 'SlabVisionTransformer',
           'SlabPyramidVisionTransformer', 'SlabSwinTransformer', 'SlabCSWinTransformer', 'checkpoint_filter_fn']

Grid = Tuple[int, int]
_MASKED = -100.  # additive attention mask value of the official Swin code


# ------------------------------------------------------------------------------------------------------- PRepBN
_RECOMPUTE = threading.local()


@contextlib.contextmanager
def _recomputing():
    """Marks a gradient-checkpoint recomputation: PRepBN/RepBN then repeat the forward without side effects."""
    _RECOMPUTE.active = True
    try:
        yield
    finally:
        _RECOMPUTE.active = False


def _in_recompute() -> bool:
    return getattr(_RECOMPUTE, 'active', False)


class RepBN(nn.Module):
    """``BatchNorm(x) + alpha * x`` over the channels (last dim) of any (..., C) tensor."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm1d on (tokens, C) has the statistics of the official (B, C, N) transpose, without the copies
        tokens = x.reshape(-1, x.shape[-1])
        bn = self.bn
        if bn.training and _in_recompute():  # the same batch statistics; copies take the running-stat update
            out = F.batch_norm(tokens, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, True,
                               0., bn.eps)
        else:
            out = bn(tokens)
        return out.view(x.shape) + self.alpha * x

    def affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode ``(scale, shift)``: RepBN(x) = scale·x + shift = (γ/σ + α)·x + (β − γμ/σ)."""
        bn = self.bn
        gamma = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return gamma + self.alpha, bn.bias - bn.running_mean * gamma


class PRepBN(nn.Module):
    """Progressive RepBN (official ``LinearNorm``): ``λ·LayerNorm(x) + (1 − λ)·RepBN(x)`` in training, RepBN in eval.

    λ = ``iter / total_step``: ``iter`` starts at ``steps`` and drops by one per training forward down to 0, after
    ``warmup`` forwards with λ = 1 (during which, unlike the official code, RepBN's running statistics already
    update: no host sync per forward; no released config has a warm-up). The counters are buffers, so a resumed run
    continues the schedule. A gradient-checkpoint recomputation (through the SLAB models' checkpointing) reuses the
    forward's λ and steps nothing.
    """

    def __init__(self, dim: int, steps: int = 60000, warmup: int = 0, eps: float = 1e-5):
        super().__init__()
        if steps <= 0 or warmup < 0:
            raise argument_error('PRepBN', 'steps', steps, f'prepbn_steps must be positive and the warm-up '
                                 f'non-negative, got {steps}, {warmup}')
        self.register_buffer('warm', torch.tensor(warmup))
        self.register_buffer('iter', torch.tensor(steps))
        self.register_buffer('total_step', torch.tensor(steps))
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = RepBN(dim)
        self._last_ratio: Optional[torch.Tensor] = None

    def ratio(self) -> torch.Tensor:
        """λ of the next training forward (a 0-dim float tensor; 1 during warm-up)."""
        lam = self.iter / self.total_step
        return torch.where(self.warm > 0, torch.ones_like(lam), lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.norm2(x)
        if _in_recompute() and self._last_ratio is not None:
            lam = self._last_ratio
            return lam * self.norm1(x) + (1 - lam) * self.norm2(x)
        lam = self._last_ratio = self.ratio()
        with torch.no_grad():  # step without a host sync: warm-up first, then iter, both stop at 0
            in_warmup = self.warm > 0
            self.iter.sub_((~in_warmup & (self.iter > 0)).to(self.iter.dtype))
            self.warm.sub_(in_warmup.to(self.warm.dtype))
        return lam * self.norm1(x) + (1 - lam) * self.norm2(x)

    def affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.norm2.affine()

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """The eval-mode RepBN as a per-channel affine (for norms that feed no Linear of their own)."""
        return ChannelAffine(*self.affine())


class ChannelAffine(nn.Module):
    """``x * weight + bias`` over the last dim: a fused PRepBN."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, x, self.weight)

    def affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.bias


def _foldable(norm: nn.Module) -> bool:
    return isinstance(norm, (PRepBN, ChannelAffine))


@torch.no_grad()
def _fold_into(owner: nn.Module, name: str, norm: nn.Module) -> None:
    """``owner.name(norm(x))`` -> ``owner.name'(x)`` for the eval-mode affine of ``norm`` (a Linear, or an
    unpadded Linear-like layer; :func:`visionzoo.layers.fuse.fold_affine_before`)."""
    setattr(owner, name, fold_affine_before(*norm.affine(), getattr(owner, name)))


@torch.no_grad()
def _fold_after(owner: nn.Module, name: str, norm: nn.Module) -> None:
    """``norm(owner.name(x))`` (per output channel) -> ``owner.name'(x)``
    (:func:`visionzoo.layers.fuse.fold_affine_after`)."""
    setattr(owner, name, fold_affine_after(getattr(owner, name), *norm.affine()))


# -------------------------------------------------------------------------------------------------------- SLA
def _shared_dwc(v: torch.Tensor, grid: Grid, conv: nn.Conv2d, num_heads: int) -> torch.Tensor:
    """Depthwise conv on each head's (H, W) map of v (B, N, C), one kernel set shared by all heads, in v's dtype."""
    b, n, c = v.shape
    d = c // num_heads
    x = v.reshape(b, n, num_heads, d).permute(0, 2, 3, 1).reshape(b * num_heads, d, *grid)
    bias = conv.bias.to(v.dtype) if conv.bias is not None else None
    x = F.conv2d(x, conv.weight.to(v.dtype), bias, padding=conv.padding, groups=d)
    return x.reshape(b, num_heads, d, n).permute(0, 3, 1, 2).reshape(b, n, c)


def simplified_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                                num_heads: int, grid: Grid, dwc: nn.Conv2d,
                                key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SLA per head, in float32 with autocast off: ``φ(q)·(φ(k)ᵀv) / (φ(q)·Σφ(k) + 1e-6) + dwc(v)``, φ = ReLU.

    Args:
        q, k, v: (B, N, C) projections of the N tokens of one (H, W) = ``grid`` window per batch row.
        pos: learned positional encoding added to k before the kernel, broadcastable to (B, N, C).
        num_heads: heads (C is split as ``(heads, head_dim)``).
        dwc: depthwise ``Conv2d(head_dim, head_dim, groups=head_dim)`` applied to every head's v map.
        key_mask: optional (B, N, 1) 0/1 mask; zero keys (padding) drop out of the sums.

    Returns:
        (B, N, C) in float32 (float64 for float64 inputs).
    """
    dtype = torch.promote_types(q.dtype, torch.float32)  # float64 stays float64
    with torch.autocast(device_type=q.device.type, enabled=False):
        v = v.to(dtype)
        q = F.relu(q.to(dtype))
        k = F.relu(k.to(dtype) + pos.to(dtype))
        if key_mask is not None:
            k = k * key_mask
        b, n, c = q.shape
        d = c // num_heads
        qh, kh, vh = (t.reshape(b, n, num_heads, d).transpose(1, 2) for t in (q, k, v))
        z = 1. / (qh @ kh.sum(dim=2).unsqueeze(-1) + 1e-6)
        if n * n * 2 * d > d * d * 2 * n:  # the cheaper association, as official
            out = qh @ (kh.transpose(-2, -1) @ vh)
        else:
            out = (qh @ kh.transpose(-2, -1)) @ vh
        out = (out * z).transpose(1, 2).reshape(b, n, c)
        return out + _shared_dwc(v, grid, dwc, num_heads)


# ------------------------------------------------------------------------------------------------- windowing
def _to_windows(x: torch.Tensor, window: Grid, shift: int = 0) -> Tuple[torch.Tensor, Grid]:
    """(B, H, W, C) -> zero-pad bottom/right to the window, roll by -shift, (B * nW, wh * ww, C) row-major windows."""
    b, h, w, c = x.shape
    wh, ww = window
    hp, wp = math.ceil(h / wh) * wh, math.ceil(w / ww) * ww
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    x = x.view(b, hp // wh, wh, wp // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c), (hp, wp)


def _from_windows(windows: torch.Tensor, window: Grid, padded: Grid, size: Grid, shift: int = 0) -> torch.Tensor:
    """Inverse of :func:`_to_windows`: (B * nW, wh * ww, C) -> (B, H, W, C)."""
    (wh, ww), (hp, wp), (h, w) = window, padded, size
    c = windows.shape[-1]
    x = windows.view(-1, hp // wh, wp // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, hp, wp, c)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    return x[:, :h, :w] if (hp, wp) != (h, w) else x


def _valid_tokens(size: Grid, window: Grid, shift: int, device: torch.device) -> Optional[torch.Tensor]:
    """(nW, wh * ww) bool: which window tokens are real (not padding); None when nothing is padded."""
    h, w = size
    if h % window[0] == 0 and w % window[1] == 0:
        return None
    valid = torch.ones(1, h, w, 1, device=device)
    return _to_windows(valid, window, shift)[0][..., 0] > 0


def _shift_mask(padded: Grid, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """(nW, N, N) additive mask of Swin's shifted windows: tokens from different regions do not attend."""
    region = torch.zeros(1, padded[0], padded[1], 1, device=device)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, hs in enumerate(cuts):
        for j, ws in enumerate(cuts):
            region[:, hs, ws] = 3 * i + j
    region = _to_windows(region, (window, window))[0][..., 0]  # the region map is laid out already shifted
    diff = region.unsqueeze(1) - region.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, _MASKED)


def _relative_position_index(window: Grid, table_window: int, device=None) -> torch.Tensor:
    """(N, N) index into a ((2w − 1)², heads) bias table for a (wh, ww) window, w = ``table_window``."""
    coords = torch.stack(torch.meshgrid(torch.arange(window[0], device=device),
                                        torch.arange(window[1], device=device), indexing='ij')).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (table_window - 1)
    return rel[0] * (2 * table_window - 1) + rel[1]


# ------------------------------------------------------------------------------------------------ attention
@register_notrace_module  # FX: windows, padding and resampling depend on the input size
class SimplifiedLinearAttention(nn.Module):
    """SLA with a joint qkv projection, over windows of a (B, H, W, C) map (DeiT blocks, Swin "L" blocks).

    ``positional_encoding`` (1, wh * ww, C) is laid out for the ``window`` given at construction (zeros at init,
    as official) and resampled for other windows.
    """

    def __init__(self, dim: int, num_heads: int, window: Grid, qkv_bias: bool = True, kernel_size: int = 5,
                 proj_drop: float = 0.):
        super().__init__()
        head_dim = dim // num_heads
        self.num_heads = num_heads
        self.pe_grid = tuple(window)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.positional_encoding = nn.Parameter(torch.zeros(1, window[0] * window[1], dim))

    def forward(self, x: torch.Tensor, window: Optional[Grid] = None, shift: int = 0) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C); ``window`` None: one window over the whole map."""
        b, h, w, _ = x.shape
        window = window or (h, w)
        qkv = self.qkv(x)
        windows, padded = _to_windows(qkv, window, shift)
        q, k, v = windows.chunk(3, dim=-1)
        valid = _valid_tokens((h, w), window, shift, x.device)
        key_mask = valid.repeat(b, 1).unsqueeze(-1) if valid is not None else None
        pos = resample_grid_tokens(self.positional_encoding, self.pe_grid, window)
        out = simplified_linear_attention(q, k, v, pos, self.num_heads, window, self.dwc, key_mask)
        out = _from_windows(out.to(qkv.dtype), window, padded, (h, w), shift)
        return self.proj_drop(self.proj(out))


@register_notrace_module  # FX: windows, padding and resampling depend on the input size
class WindowAttention(nn.Module):
    """Swin (shifted-)window softmax attention with a relative position bias table, on a (B, H, W, C) map."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, qkv_bias: bool = True,
                 proj_drop: float = 0.):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer('relative_position_index',
                             _relative_position_index((window_size, window_size), window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=.02)

    def _bias(self, window: Grid) -> torch.Tensor:
        if window == (self.window_size, self.window_size):
            index = self.relative_position_index
        else:
            index = _relative_position_index(window, self.window_size, self.relative_position_bias_table.device)
        n = window[0] * window[1]
        return self.relative_position_bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, window: Grid, shift: int = 0) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x)
        windows, padded = _to_windows(qkv, window, shift)
        n = window[0] * window[1]
        q, k, v = windows.view(b, -1, n, 3, self.num_heads, c // self.num_heads).permute(3, 0, 1, 4, 2, 5)
        mask = self._bias(window).unsqueeze(0)  # (1, heads, N, N), broadcast over (B, nW)
        if shift:
            mask = mask + _shift_mask(padded, window[0], shift, x.device).unsqueeze(1)
        valid = _valid_tokens((h, w), window, shift, x.device)
        if valid is not None:
            mask = mask + (~valid).float()[:, None, None, :] * _MASKED
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), scale=self.scale)
        out = _from_windows(out.permute(0, 1, 3, 2, 4).reshape(-1, n, c), window, padded, (h, w), shift)
        return self.proj_drop(self.proj(out))


@register_notrace_module  # FX: windows, padding and resampling depend on the input size
class PvtLinearAttention(nn.Module):
    """PVT's SLA: separate ``q`` and ``kv`` projections, global over a (B, H, W, C) map."""

    def __init__(self, dim: int, num_heads: int, grid: Grid, qkv_bias: bool = True, kernel_size: int = 5,
                 proj_drop: float = 0.):
        super().__init__()
        head_dim = dim // num_heads
        self.num_heads = num_heads
        self.pe_grid = tuple(grid)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.positional_encoding = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        q = self.q(x)
        k, v = self.kv(x).chunk(2, dim=-1)
        pos = resample_grid_tokens(self.positional_encoding, self.pe_grid, (h, w))
        out = simplified_linear_attention(q.reshape(b, h * w, c), k.reshape(b, h * w, c), v.reshape(b, h * w, c),
                                          pos, self.num_heads, (h, w), self.dwc)
        return self.proj_drop(self.proj(out.to(q.dtype).view(b, h, w, c)))


@register_notrace_module  # FX: windows, padding and resampling depend on the input size
class CSWinLinearAttention(nn.Module):
    """CSWin's "L" branch: global SLA on given q, k, v maps, plus LePE (depthwise 3x3 ``get_v`` on v)."""

    def __init__(self, dim: int, num_heads: int, grid: Grid, kernel_size: int = 5):
        super().__init__()
        head_dim = dim // num_heads
        self.num_heads = num_heads
        self.pe_grid = tuple(grid)
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.positional_encoding = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, w, c = q.shape
        lepe = self.get_v(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        pos = resample_grid_tokens(self.positional_encoding, self.pe_grid, (h, w))
        out = simplified_linear_attention(q.reshape(b, h * w, c), k.reshape(b, h * w, c), v.reshape(b, h * w, c),
                                          pos, self.num_heads, (h, w), self.dwc)
        return (out.view(b, h, w, c) + lepe).to(q.dtype)


@register_notrace_module  # FX: windows, padding and resampling depend on the input size
class LePEAttention(nn.Module):
    """CSWin's "S" branch: softmax attention in stripes plus LePE, on given q, k, v maps.

    ``axis`` 0: stripes of full height and ``split_size`` columns; 1: ``split_size`` rows of full width; None: the
    whole map (the last stage). Stripes are clamped to the map and the map is padded to whole stripes.
    """

    def __init__(self, dim: int, num_heads: int, split_size: int = 7, axis: Optional[int] = None):
        super().__init__()
        self.num_heads = num_heads
        self.split_size = split_size
        self.axis = axis
        self.scale = (dim // num_heads) ** -0.5
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def _window(self, h: int, w: int) -> Grid:
        if self.axis is None:
            return h, w
        return (h, min(self.split_size, w)) if self.axis == 0 else (min(self.split_size, h), w)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, w, c = q.shape
        window = self._window(h, w)
        n, d = window[0] * window[1], c // self.num_heads
        (qw, padded), (kw, _), (vw, _) = (_to_windows(t, window) for t in (q, k, v))
        lepe = self.get_v(vw.view(-1, window[0], window[1], c).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        qh, kh, vh = (t.view(-1, n, self.num_heads, d).transpose(1, 2) for t in (qw, kw, vw))
        valid = _valid_tokens((h, w), window, 0, q.device)
        mask = None
        if valid is not None:
            mask = ((~valid).float() * _MASKED).repeat(b, 1)[:, None, None, :].to(qh.dtype)
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=self.scale)
        out = out.transpose(1, 2).reshape(-1, n, c) + lepe
        return _from_windows(out, window, padded, (h, w))


# --------------------------------------------------------------------------------------------------- blocks
class _PreNormBlock(nn.Module):
    """Shared ``x + attn(norm1(x)); x + mlp(norm2(x))`` and its fusion; subclasses set ``attn`` and ``_attend``."""

    def _init_common(self, dim: int, mlp_ratio: float, drop: float, drop_path: float, norm_layer) -> None:
        self.norm1 = norm_layer(dim)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)  # timm's: keys fc1/fc2, dropout after act and fc2
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def _attn_inputs(self) -> List[Tuple[nn.Module, str]]:
        """The Linear layers that read ``norm1``'s output, as (owner, attribute name)."""
        return [(self.attn, 'qkv')]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) map -> (B, H, W, C)."""
        x = x + self.drop_path(self._attend(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """Eval mode: fold norm1 into the attention's input projection(s) and norm2 into ``mlp.fc1``."""
        if _foldable(self.norm1):
            for owner, name in self._attn_inputs():
                _fold_into(owner, name, self.norm1)
            self.norm1 = nn.Identity()
        if _foldable(self.norm2):
            _fold_into(self.mlp, 'fc1', self.norm2)
            self.norm2 = nn.Identity()
        return self


class VitBlock(_PreNormBlock):
    """DeiT block with SLA over the whole token map."""

    def __init__(self, dim: int, num_heads: int, grid: Grid, mlp_ratio: float = 4., qkv_bias: bool = True,
                 kernel_size: int = 5, drop: float = 0., drop_path: float = 0., norm_layer=PRepBN):
        super().__init__()
        self.attn = SimplifiedLinearAttention(dim, num_heads, grid, qkv_bias, kernel_size, drop)
        self._init_common(dim, mlp_ratio, drop, drop_path, norm_layer)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)


class PvtBlock(_PreNormBlock):
    """PVT block with SLA (q and kv projections)."""

    def __init__(self, dim: int, num_heads: int, grid: Grid, mlp_ratio: float = 4., qkv_bias: bool = True,
                 kernel_size: int = 5, drop: float = 0., drop_path: float = 0., norm_layer=PRepBN):
        super().__init__()
        self.attn = PvtLinearAttention(dim, num_heads, grid, qkv_bias, kernel_size, drop)
        self._init_common(dim, mlp_ratio, drop, drop_path, norm_layer)

    def _attn_inputs(self) -> List[Tuple[nn.Module, str]]:
        return [(self.attn, 'q'), (self.attn, 'kv')]

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)


class SwinBlock(_PreNormBlock):
    """Swin block: SLA ("L") or softmax ("S") attention in (shifted) windows.

    The window is clamped to the map per axis, and the shift dropped when the map fits in one window.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, attn_type: str,
                 mlp_ratio: float = 4., qkv_bias: bool = True, kernel_size: int = 5, drop: float = 0.,
                 drop_path: float = 0., norm_layer=PRepBN):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        if attn_type == 'L':
            self.attn = SimplifiedLinearAttention(dim, num_heads, (window_size, window_size), qkv_bias,
                                                  kernel_size, drop)
        else:
            self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, drop)
        self._init_common(dim, mlp_ratio, drop, drop_path, norm_layer)

    def window_and_shift(self, height: int, width: int) -> Tuple[Grid, int]:
        return _swin_window(height, width, self.window_size, self.shift_size)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        window, shift = _swin_window(x.shape[1], x.shape[2], self.window_size, self.shift_size)
        return self.attn(x, window, shift)


@torch.fx.wrap
@register_notrace_function
def _swin_window(height: int, width: int, window_size: int, shift_size: int) -> Tuple[Grid, int]:
    """The window of a Swin block on a ``height`` x ``width`` map (clamped to the map per axis) and its shift
    (none when the map fits in one window)."""
    if min(height, width) <= window_size:
        return (min(window_size, height), min(window_size, width)), 0
    return (window_size, window_size), shift_size


class CSWinBlock(_PreNormBlock):
    """CSWin block: joint qkv, then one global SLA branch ("L"), two stripe branches ("S") on channel halves, or
    one global softmax branch ("S", last stage); then ``proj``."""

    def __init__(self, dim: int, num_heads: int, attn_type: str, grid: Grid, split_size: int, last_stage: bool,
                 mlp_ratio: float = 4., qkv_bias: bool = True, kernel_size: int = 5, drop: float = 0.,
                 drop_path: float = 0., norm_layer=PRepBN):
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        if attn_type == 'L':
            attns = [CSWinLinearAttention(dim, num_heads, grid, kernel_size)]
        elif last_stage:
            attns = [LePEAttention(dim, num_heads, split_size, None)]
        else:
            attns = [LePEAttention(dim // 2, num_heads // 2, split_size, axis) for axis in (0, 1)]
        self.attns = nn.ModuleList(attns)
        self._init_common(dim, mlp_ratio, drop, drop_path, norm_layer)

    def _attn_inputs(self) -> List[Tuple[nn.Module, str]]:
        return [(self, 'qkv')]

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if len(self.attns) == 1:
            out = self.attns[0](q, k, v)
        else:
            half = q.shape[-1] // 2
            out = torch.cat([attn(q[..., s], k[..., s], v[..., s]) for attn, s in
                             zip(self.attns, (slice(None, half), slice(half, None)))], dim=-1)
        return self.proj_drop(self.proj(out))


# ------------------------------------------------------------------------------------------ embeddings, merging
@register_notrace_module  # FX: windows, padding and resampling depend on the input size
class PatchEmbed(nn.Module):
    """Non-overlapping conv patches (the image zero-padded to whole patches) -> (B, H, W, C), then the norm."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm_layer=None):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        if h % p or w % p:
            x = F.pad(x, (0, -w % p, 0, -h % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        if _foldable(self.norm):
            _fold_after(self, 'proj', self.norm)
            self.norm = nn.Identity()
        return self


@register_notrace_module  # FX: windows, padding and resampling depend on the input size
class PatchMerging(nn.Module):
    """Swin 2x2 merge (odd maps zero-padded, as the official detection code): concat, norm, Linear 4C -> 2C."""

    def __init__(self, dim: int, norm_layer=PRepBN):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        if _foldable(self.norm):
            _fold_into(self, 'reduction', self.norm)
            self.norm = nn.Identity()
        return self


class _ChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class ConvNormEmbed(nn.Sequential):
    """CSWin's stem (``Conv2d(7, stride 4, pad 2)``) and merges (``Conv2d(3, stride 2, pad 1)``): conv, then the
    norm on the (B, H, W, C) map; the official keys ``stage1_conv_embed.0``/``.2`` and ``merge*.conv``/``.norm``
    come from ``names``."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int, stride: int, padding: int, norm_layer,
                 names: Tuple[str, str, str]):
        super().__init__()
        self.add_module(names[0], nn.Conv2d(in_chans, out_chans, kernel, stride, padding))
        self.add_module(names[1], _ChannelsLast())
        self.add_module(names[2], norm_layer(out_chans))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        conv_name, _, norm_name = self._modules
        if _foldable(self._modules[norm_name]):
            _fold_after(self, conv_name, self._modules[norm_name])
            self[2] = nn.Identity()
        return self


# --------------------------------------------------------------------------------------------- shared model API
def _norm_layer(steps: int, eps: float):
    def make(dim: int) -> PRepBN:
        return PRepBN(dim, steps=steps, eps=eps)
    return make


class _SlabModel(ClassifierMixin, nn.Module):
    """Classifier plumbing shared by the four architectures (average pooling over the tokens, linear head)."""

    POOL_DIMS: Tuple[int, ...] = (1, 2)  # the token dims of forward_features' output: (B, H, W, C) maps

    def _checkpointed(self, fn, *args):
        """Activation checkpointing whose recomputation leaves the PRepBN schedule and BN statistics alone."""
        return checkpointed(self.grad_checkpointing, fn, *args,
                            context_fn=lambda: (contextlib.nullcontext(), _recomputing()))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features from :meth:`forward_features` ((B, N, C) or (B, H, W, C)) -> logits (or pooled features)."""
        if self.global_pool == 'avg':
            x = x.mean(dim=self.POOL_DIMS)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    @staticmethod
    def _fmt(x: torch.Tensor, output_fmt: str) -> torch.Tensor:
        """A (B, H, W, C) map in the requested format."""
        if output_fmt == 'NCHW':
            return x.permute(0, 3, 1, 2).contiguous()
        if output_fmt == 'NLC':
            return x.flatten(1, 2)
        return x



class _HierarchicalSlabModel(_SlabModel):
    """PVT, Swin and CSWin: ``_stages(x, last)`` yields each stage's (B, H, W, C) map (strides 4, 8, 16, 32);
    ``norm`` is the final norm (an identity for PVT, which has none). Features are channels-last, declared as
    ``output_fmt = 'NHWC'`` as timm's Swin does (timm's hook and FX feature extractors read it)."""

    output_fmt = 'NHWC'

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> normalised last-stage map (B, H', W', C)."""
        for x in self._stages(x, self.num_stages - 1):
            pass
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False):
        """Stage outputs (strides 4, 8, 16, 32), before the next downsampling; ``norm``: the final norm on the
        last stage."""
        check_output_fmt(self, output_fmt, ('NCHW', 'NHWC'))
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = max_index if stop_early and intermediates_only else self.num_stages - 1
        intermediates = []
        for i, x in enumerate(self._stages(x, last)):
            if i in take_indices:
                final = norm and i == self.num_stages - 1
                intermediates.append(self._fmt(self.norm(x) if final else x, output_fmt))
        return intermediates if intermediates_only else (self.norm(x), intermediates)


@torch.fx.wrap
@register_notrace_function
def _check_divisible(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """``x`` if its sides are positive multiples of ``divisor``, else a ValueError (one FX node when traced)."""
    h, w = x.shape[-2:]
    if h % divisor or w % divisor or h == 0 or w == 0:
        raise ValueError(f'input image sides must be positive multiples of {divisor}; got {h}x{w}')
    return x


# ------------------------------------------------------------------------------------------------------ DeiT
class SlabVisionTransformer(_SlabModel):
    """SLAB-DeiT: patch embedding + absolute position embedding, SLA blocks, PRepBN, average pooling.

    Args:
        img_size: size the position embeddings are laid out for (others are resampled, bicubic).
        patch_size: patch size and stride (input sides must be multiples of it).
        in_chans, num_classes, global_pool ('avg' or ''): as in timm.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer sizes.
        kernel_size: SLA depthwise conv kernel.
        drop_rate: dropout after the position embedding, attention projection and MLP layers.
        drop_path_rate: stochastic depth (linear over the blocks).
        prepbn_steps: training forwards over which PRepBN goes from LayerNorm to RepBN.
        norm_eps: LayerNorm epsilon inside PRepBN.
    """

    def __init__(self, img_size: Union[int, Grid] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = 'avg', embed_dim: int = 192, depth: int = 12,
                 num_heads: int = 3, mlp_ratio: float = 4., qkv_bias: bool = True, kernel_size: int = 5,
                 drop_rate: float = 0., drop_path_rate: float = 0., prepbn_steps: int = 60000,
                 norm_eps: float = 1e-6):
        super().__init__()
        img_size = to_2tuple(img_size)
        norm_layer = _norm_layer(prepbn_steps, norm_eps)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.pos_grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList([
            VitBlock(embed_dim, num_heads, self.pos_grid, mlp_ratio, qkv_bias, kernel_size, drop_rate, dpr[i],
                     norm_layer) for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.feature_info = [dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=patch_size)
                             for i in range(depth)]
        self.num_prefix_tokens = 0  # timm's ViT attributes: no class token (the official model pools the tokens)
        self.has_class_token = False
        self._init_classifier(embed_dim, num_classes, global_pool)
        trunc_normal_(self.pos_embed, std=.02)
        self.apply(init_linear_trunc_normal)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {'pos_embed'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r'^pos_embed|^patch_embed', blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    POOL_DIMS = (1,)  # forward_features returns (B, N, C) tokens

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(_check_divisible(x, self.patch_size))
        pos = resample_grid_tokens(self.pos_embed, self.pos_grid, x.shape[1:3])
        return self.pos_drop(x + pos.unflatten(1, (x.shape[1], x.shape[2])))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> normalised tokens (B, H/16 * W/16, C)."""
        x = self._embed(x)
        for block in self.blocks:
            x = self._checkpointed(block, x)
        return self.norm(x).flatten(1, 2)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False, return_prefix_tokens: bool = False):
        """Outputs of chosen blocks (stride 16), optionally through the final norm, as NCHW maps or NLC tokens.
        ``return_prefix_tokens`` is timm's ViT argument; there are no prefix tokens, so it changes nothing."""
        check_output_fmt(self, output_fmt, ('NCHW', 'NLC'))
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        blocks = self.blocks[:max_index + 1] if stop_early and intermediates_only else self.blocks
        x = self._embed(x)
        intermediates = []
        for i, block in enumerate(blocks):
            x = self._checkpointed(block, x)
            if i in take_indices:
                intermediates.append(self._fmt(self.norm(x) if norm else x, output_fmt))
        if intermediates_only:
            return intermediates
        return self.norm(x).flatten(1, 2), intermediates

    def _num_levels(self) -> int:
        return len(self.blocks)

    def _prune_levels(self, keep: int) -> None:
        self.blocks = self.blocks[:keep]


# ------------------------------------------------------------------------------------------------------- PVT
class SlabPyramidVisionTransformer(_HierarchicalSlabModel):
    """SLAB-PVT: four stages of (patch embedding + position embedding, SLA blocks), no final norm, average pooling.

    Stage i has ``patch_embed{i}``, ``pos_embed{i}`` and ``block{i}`` as official. Input sides must be multiples
    of 32. Args as :class:`SlabVisionTransformer`, per stage: ``embed_dims``, ``num_heads``, ``mlp_ratios``,
    ``depths``.
    """

    def __init__(self, img_size: Union[int, Grid] = 224, patch_size: int = 4, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = 'avg', embed_dims: Sequence[int] = (64, 128, 320, 512),
                 num_heads: Sequence[int] = (1, 2, 5, 8), mlp_ratios: Sequence[float] = (8, 8, 4, 4),
                 depths: Sequence[int] = (2, 2, 2, 2), qkv_bias: bool = True, kernel_size: int = 5,
                 drop_rate: float = 0., drop_path_rate: float = 0., prepbn_steps: int = 300000,
                 norm_eps: float = 1e-6):
        super().__init__()
        img_size = to_2tuple(img_size)
        norm_layer = _norm_layer(prepbn_steps, norm_eps)
        self.num_stages = len(depths)
        self.divisor = patch_size * 2 ** (self.num_stages - 1)
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        self.pos_grids = []
        self.feature_info = []
        for i in range(self.num_stages):
            stride = patch_size * 2 ** i
            grid = (img_size[0] // stride, img_size[1] // stride)
            self.pos_grids.append(grid)
            dim = embed_dims[i]
            setattr(self, f'patch_embed{i + 1}', PatchEmbed(patch_size if i == 0 else 2,
                                                            in_chans if i == 0 else embed_dims[i - 1], dim,
                                                            norm_layer))
            setattr(self, f'pos_embed{i + 1}', nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim)))
            setattr(self, f'block{i + 1}', nn.ModuleList([
                PvtBlock(dim, num_heads[i], grid, mlp_ratios[i], qkv_bias, kernel_size, drop_rate,
                         dpr[sum(depths[:i]) + j], norm_layer) for j in range(depths[i])]))
            self.feature_info.append(dict(module=f'block{i + 1}', num_chs=dim, reduction=stride))
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm = nn.Identity()  # no final norm (no parameters: the official layout is unchanged)
        self._init_classifier(embed_dims[-1], num_classes, global_pool)
        for i in range(self.num_stages):
            trunc_normal_(getattr(self, f'pos_embed{i + 1}'), std=.02)
        self.apply(init_linear_trunc_normal)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r'^patch_embed1|^pos_embed1',
                    blocks=[(r'^(?:patch_embed|pos_embed|block)(\d+)', None)])

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage i: (B, C, H, W) (image or previous NCHW map) -> (B, H', W', C')."""
        x = getattr(self, f'patch_embed{i + 1}')(x)
        pos = resample_grid_tokens(getattr(self, f'pos_embed{i + 1}'), self.pos_grids[i], x.shape[1:3], 'bilinear')
        x = self.pos_drop(x + pos.unflatten(1, (x.shape[1], x.shape[2])))
        for block in getattr(self, f'block{i + 1}'):
            x = self._checkpointed(block, x)
        return x

    def _stages(self, x: torch.Tensor, last: int):
        x = _check_divisible(x, self.divisor)
        for i in range(last + 1):
            x = self._stage(i, x if i == 0 else x.permute(0, 3, 1, 2))
            yield x

    FINAL_NORM = None  # no final norm

    def _num_levels(self) -> int:
        return self.num_stages

    def _prune_levels(self, keep: int) -> None:
        for i in range(keep, self.num_stages):
            for name in ('patch_embed', 'pos_embed', 'block'):
                delattr(self, f'{name}{i + 1}')
        self.num_stages = keep


# ------------------------------------------------------------------------------------------------------ Swin
class SwinStage(nn.Module):
    """Official ``BasicLayer``: ``blocks`` then an optional ``downsample`` (PatchMerging)."""

    def __init__(self, blocks: List[nn.Module], downsample: Optional[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class SlabSwinTransformer(_HierarchicalSlabModel):
    """SLAB-Swin: "L" stages of SLA in full-map windows, "S" stages of shifted-window softmax attention.

    Args:
        img_size: sizes the "L" windows (``window_size`` clamped to each stage's map at this size: 56, 28 at 224)
            and their positional encodings; any input size runs.
        patch_size, in_chans, num_classes, global_pool: as in timm.
        embed_dim, depths, num_heads, mlp_ratio, qkv_bias: Swin sizes (channels double per stage).
        window_size: "L" window (56 officially); "S" stages use ``local_window_size`` (7).
        attn_type: one letter per stage, ``'L'`` or ``'S'`` (official ``'LLSS'``).
        kernel_size: SLA depthwise conv kernel.
        drop_rate, drop_path_rate, prepbn_steps, norm_eps: as :class:`SlabVisionTransformer`.
    """

    def __init__(self, img_size: Union[int, Grid] = 224, patch_size: int = 4, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = 'avg', embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 56, local_window_size: int = 7, attn_type: str = 'LLSS',
                 mlp_ratio: float = 4., qkv_bias: bool = True, kernel_size: int = 5, drop_rate: float = 0.,
                 drop_path_rate: float = 0., prepbn_steps: int = 60000, norm_eps: float = 1e-5):
        super().__init__()
        if len(attn_type) != len(depths) or set(attn_type) - {'L', 'S'}:
            raise argument_error(type(self).__name__, 'attn_type', attn_type,
                                 f"attn_type must have one 'L' or 'S' per stage ({len(depths)})")
        img_size = to_2tuple(img_size)
        norm_layer = _norm_layer(prepbn_steps, norm_eps)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        self.feature_info = []
        for i, depth in enumerate(depths):
            dim = embed_dim * 2 ** i
            side = min(img_size) // (patch_size * 2 ** i)
            ws = max(1, min(window_size, side)) if attn_type[i] == 'L' else local_window_size
            blocks = [SwinBlock(dim, num_heads[i], ws, 0 if j % 2 == 0 else ws // 2, attn_type[i], mlp_ratio,
                                qkv_bias, kernel_size, drop_rate, dpr[sum(depths[:i]) + j], norm_layer)
                      for j in range(depth)]
            downsample = PatchMerging(dim, norm_layer) if i < len(depths) - 1 else None
            self.layers.append(SwinStage(blocks, downsample))
            # the blocks (not the stage, whose downsample runs at the start of the next stage): FX feature extraction
            # returns the last node under the named module
            self.feature_info.append(dict(module=f'layers.{i}.blocks', num_chs=dim, reduction=patch_size * 2 ** i))
        num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = norm_layer(num_features)
        self._init_classifier(num_features, num_classes, global_pool)
        self.apply(init_linear_trunc_normal)

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set:
        return {'relative_position_bias_table'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r'^patch_embed', blocks=r'^layers\.(\d+)' if coarse else [
            (r'^layers\.(\d+)\.downsample', (0,)), (r'^layers\.(\d+)\.\w+\.(\d+)', None), (r'^norm', (99999,))])

    def _stages(self, x: torch.Tensor, last: int):
        """Yields each stage's output map (B, H, W, C), before its downsample."""
        x = self.pos_drop(self.patch_embed(x))
        for i in range(last + 1):
            layer = self.layers[i]
            if i > 0:
                x = self.layers[i - 1].downsample(x)
            for block in layer.blocks:
                x = self._checkpointed(block, x)
            yield x

    @property
    def num_stages(self) -> int:
        return len(self.layers)

    def _num_levels(self) -> int:
        return self.num_stages

    def _prune_levels(self, keep: int) -> None:
        self.layers = self.layers[:keep]
        self.layers[-1].downsample = None


# ----------------------------------------------------------------------------------------------------- CSWin
class SlabCSWinTransformer(_HierarchicalSlabModel):
    """SLAB-CSWin: conv stem, stages of CSWin blocks joined by stride-2 conv merges, final PRepBN, average pooling.

    "L" stages run one global SLA branch (positional encodings laid out for the stage map at ``img_size``); "S"
    stages run two stripe branches of width ``split_sizes[i]``, the last stage one global branch.

    Args as :class:`SlabSwinTransformer`; ``split_sizes``: per-stage stripe width of the "S" stages.
    """

    def __init__(self, img_size: Union[int, Grid] = 224, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = 'avg', embed_dim: int = 64, depths: Sequence[int] = (2, 4, 18, 1),
                 num_heads: Sequence[int] = (2, 4, 8, 16), split_sizes: Sequence[int] = (1, 2, 7, 7),
                 attn_type: str = 'LLSS', mlp_ratio: float = 4., qkv_bias: bool = True, kernel_size: int = 5,
                 drop_rate: float = 0., drop_path_rate: float = 0., prepbn_steps: int = 120000,
                 norm_eps: float = 1e-5):
        super().__init__()
        if len(attn_type) != len(depths) or set(attn_type) - {'L', 'S'}:
            raise argument_error(type(self).__name__, 'attn_type', attn_type,
                                 f"attn_type must have one 'L' or 'S' per stage ({len(depths)})")
        img_size = to_2tuple(img_size)
        norm_layer = _norm_layer(prepbn_steps, norm_eps)
        self.num_stages = len(depths)
        self.stage1_conv_embed = ConvNormEmbed(in_chans, embed_dim, 7, 4, 2, norm_layer, ('0', '1', '2'))
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        self.feature_info = []
        grid = ((img_size[0] - 3) // 4 + 1, (img_size[1] - 3) // 4 + 1)
        dim = embed_dim
        for i, depth in enumerate(depths):
            if i > 0:
                setattr(self, f'merge{i}', ConvNormEmbed(dim, dim * 2, 3, 2, 1, norm_layer, ('conv', 'act', 'norm')))
                dim *= 2
                grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
            setattr(self, f'stage{i + 1}', nn.ModuleList([
                CSWinBlock(dim, num_heads[i], attn_type[i], grid, split_sizes[i], i == len(depths) - 1, mlp_ratio,
                           qkv_bias, kernel_size, drop_rate, dpr[sum(depths[:i]) + j], norm_layer)
                for j in range(depth)]))
            self.feature_info.append(dict(module=f'stage{i + 1}', num_chs=dim, reduction=4 * 2 ** i))
        self.norm = norm_layer(dim)
        self._init_classifier(dim, num_classes, global_pool)
        self.apply(init_linear_trunc_normal)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r'^stage1_conv_embed', blocks=[(r'^(?:stage|merge)(\d+)', None), (r'^norm', (99999,))])

    def _stages(self, x: torch.Tensor, last: int):
        x = self.stage1_conv_embed(x)
        for i in range(last + 1):
            if i > 0:
                x = getattr(self, f'merge{i}')(x.permute(0, 3, 1, 2))
            for block in getattr(self, f'stage{i + 1}'):
                x = self._checkpointed(block, x)
            yield x

    def _num_levels(self) -> int:
        return self.num_stages

    def _prune_levels(self, keep: int) -> None:
        for i in range(keep, self.num_stages):
            delattr(self, f'merge{i}')
            delattr(self, f'stage{i + 1}')
        self.num_stages = keep


# ------------------------------------------------------------------------------------------- checkpoint filter
def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
    """Official SLAB checkpoints (or their ``model`` / ``state_dict`` entry, DDP ``module.`` prefix) -> this model.

    Drops what the official models carry but never use (DeiT ``cls_token``, CSWin ``attns.*.scale``) and the
    buffers recomputed here (``relative_position_index``, ``attn_mask``); resamples position embeddings and SLA
    positional encodings laid out for another grid (official: square) to the model's.
    """
    own = model.state_dict()
    out = {}
    for k, v in unwrap_state_dict(state_dict).items():
        if k == 'cls_token' or k.endswith(('.relative_position_index', '.attn_mask')) or \
                (k.endswith('.scale') and '.attns.' in k):
            continue
        if k in own and v.ndim == 3 and v.shape[1] != own[k].shape[1] and \
                (k.endswith('.positional_encoding') or k.split('.')[-1].startswith('pos_embed')):
            v = resample_grid_tokens(v, _square(k, v.shape[1]), *_target_grid(model, k))
        out[k] = v
    return out


def _square(key: str, n: int) -> Grid:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f'{key}: expected a square grid of position embeddings, got {n} entries')
    return side, side


def _target_grid(model: nn.Module, key: str) -> Tuple[Grid, str]:
    """The grid a position-token parameter is laid out for in ``model``, and the mode the model resamples it with."""
    if key.endswith('.positional_encoding'):
        return model.get_submodule(key.rsplit('.', 1)[0]).pe_grid, 'bicubic'
    if key == 'pos_embed':
        return model.pos_grid, 'bicubic'
    return model.pos_grids[int(key[len('pos_embed'):]) - 1], 'bilinear'  # PVT's, as its official runtime resize


# ------------------------------------------------------------------------------------------------ registration
_CLASSES = {'deit': SlabVisionTransformer, 'pvt': SlabPyramidVisionTransformer, 'swin': SlabSwinTransformer,
            'cswin': SlabCSWinTransformer}


def _create_slab(variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    arch = variant.split('_')[1]
    if arch == 'deit':
        depth = kwargs.get('depth', 12)
        step = max(depth // 4, 1)
        default_out = tuple(range(step - 1, depth, step))[-4:]
    else:
        default_out = tuple(range(len(kwargs.get('depths', (0,) * 4))))
    out_indices = kwargs.pop('out_indices', default_out)
    return build_model_with_cfg(_CLASSES[arch], variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=out_indices, feature_cls='getter'), **kwargs)


def _cfg(url: str, first_conv: str = 'patch_embed.proj', **kwargs) -> dict:
    # the official eval transform (classification/data/build.py): resize 256/224, centre crop, bicubic, ImageNet
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': None, 'crop_pct': .875,
        'interpolation': 'bicubic', 'fixed_input_size': False, 'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD, 'first_conv': first_conv, 'classifier': 'head',
        'paper_ids': 'arXiv:2405.11582', 'origin_url': 'https://github.com/xinghaochen/SLAB', **kwargs,
    }


_RELEASES = 'https://github.com/xinghaochen/SLAB/releases/download/ckpts/'
default_cfgs = generate_default_cfgs({
    'slab_deit_tiny.in1k': _cfg(_RELEASES + 'slab_deit_tiny.pth'),
    'slab_deit_small.in1k': _cfg(_RELEASES + 'slab_deit_small.pth'),
    # the hierarchical models end in a 7 x 7 NHWC map at 224 (output_fmt='NHWC' on the model, as timm's Swin)
    'slab_pvt_tiny.in1k': _cfg(_RELEASES + 'slab_pvt_tiny.pth', first_conv='patch_embed1.proj', pool_size=(7, 7)),
    'slab_swin_tiny.in1k': _cfg(_RELEASES + 'slab_swin_tiny.pth', pool_size=(7, 7)),
    'slab_swin_small.in1k': _cfg(_RELEASES + 'slab_swin_small.pth', pool_size=(7, 7)),
    'slab_cswin_tiny.in1k': _cfg(_RELEASES + 'slab_cswin_tiny.pth', first_conv='stage1_conv_embed.0', pool_size=(7, 7)),
})


@register_model
def slab_deit_tiny(pretrained: bool = False, **kwargs) -> SlabVisionTransformer:
    """SLAB-DeiT-T: 192 wide, 12 blocks, 3 heads (6.20M params, 74.3% ImageNet top-1; official training
    drop_path 0)."""
    return _create_slab('slab_deit_tiny', pretrained, **dict(dict(embed_dim=192, depth=12, num_heads=3), **kwargs))


@register_model
def slab_deit_small(pretrained: bool = False, **kwargs) -> SlabVisionTransformer:
    """SLAB-DeiT-S: 384 wide, 12 blocks, 6 heads (22.99M params, 80.0%; drop_path 0)."""
    return _create_slab('slab_deit_small', pretrained, **dict(dict(embed_dim=384, depth=12, num_heads=6), **kwargs))


@register_model
def slab_pvt_tiny(pretrained: bool = False, **kwargs) -> SlabPyramidVisionTransformer:
    """SLAB-PVT-T: dims 64/128/320/512, 2 blocks per stage, SLA everywhere (12.16M params, 76.5%; drop_path 0)."""
    return _create_slab('slab_pvt_tiny', pretrained, **dict(dict(depths=(2, 2, 2, 2)), **kwargs))


@register_model
def slab_swin_tiny(pretrained: bool = False, **kwargs) -> SlabSwinTransformer:
    """SLAB-Swin-T: 96 wide, depths 2/2/6/2, "LLSS" (29.22M params, 81.8%; official training drop_path 0.2)."""
    return _create_slab('slab_swin_tiny', pretrained, **dict(dict(depths=(2, 2, 6, 2)), **kwargs))


@register_model
def slab_swin_small(pretrained: bool = False, **kwargs) -> SlabSwinTransformer:
    """SLAB-Swin-S: 96 wide, depths 2/2/18/2, "LLSS" (50.55M params, 83.6%; drop_path 0.3)."""
    return _create_slab('slab_swin_small', pretrained, **dict(dict(depths=(2, 2, 18, 2)), **kwargs))


@register_model
def slab_cswin_tiny(pretrained: bool = False, **kwargs) -> SlabCSWinTransformer:
    """SLAB-CSWin-T: 64 wide, depths 2/4/18/1, "LLSS" (21.23M params, 82.8%; drop_path 0.1)."""
    return _create_slab('slab_cswin_tiny', pretrained, **dict(dict(depths=(2, 4, 18, 1)), **kwargs))
