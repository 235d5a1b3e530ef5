"""BiFormer: vision transformer with bi-level routing attention (BRA).

Paper: "BiFormer: Vision Transformer with Bi-Level Routing Attention", Zhu et al., CVPR 2023 (arXiv:2303.08810).
Official code and weights: https://github.com/rayleizhu/BiFormer.

The architecture and state_dict layout are the official ones (models/biformer.py with ops/bra_legacy.py), so
official checkpoints load unchanged through :func:`checkpoint_filter_fn`: a conv stem and strided-conv downsampling
with BatchNorm, four stages of pre-norm blocks (3x3 depthwise conv position embedding, attention, MLP), BRA in
stages 1-3 and full attention with LePE in stage 4, a final BatchNorm and a linear head on the spatial mean.
What differs from the official code:

* the token-level routed attention runs on :func:`visionzoo.ops.routing_attention` (Triton on CUDA; on CPU a
  PyTorch path whose backward scatters into the routed regions instead of differentiating an expanded
  ``torch.gather``), with the official routing (detached region means, top-k shared by all heads) and the
  official scale ``qk_dim ** -0.5`` of the full query/key width;
* inputs of any size: each BRA layer pads its input at the bottom and right to a multiple of ``n_win`` before the
  projection and crops after (the official ``auto_pad``, used by its detection and segmentation models; for sizes
  that divide, the result is the same as without);
* ``n_win`` and ``topk`` may be set per stage, and :meth:`forward_intermediates` returns the stage outputs at
  strides 4/8/16/32 for dense prediction (the official dense models add a ``LayerNorm2d`` on each, which
  visionzoo's dense wrapper provides);
* blocks run on channels-last (NHWC) activations inside a stage instead of permuting per block.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, calculate_drop_path_rates, register_notrace_function
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..ops.routing_attention import routing_attention
from ..utils.options import argument_error
from ._checkpoint import unwrap_state_dict
from ._contract import ClassifierMixin, check_output_fmt, checkpointed, init_linear_trunc_normal

__all__ = ['BiFormer', 'BiFormerStage', 'BiFormerBlock', 'BiLevelRoutingAttention', 'AttentionLePE',
           'checkpoint_filter_fn']

# FX tracing: the routed-attention op and the region padding branch on shapes, so a traced model calls them as
# single nodes (timm's feature_cls='fx', torchvision's feature extraction, FX quantisation).
register_notrace_function(routing_attention)
torch.fx.wrap('routing_attention')


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """An (N, H, W, C) tensor as an (N, C, H, W) view (channels-last memory when x is contiguous)."""
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


@torch.fx.wrap
@register_notrace_function
def _pad_to_regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """Zero-pad an (N, H, W, C) map at the bottom and right to multiples of ``n_win`` (the official auto_pad)."""
    pad_b, pad_r = -x.shape[1] % n_win, -x.shape[2] % n_win
    return F.pad(x, (0, 0, 0, pad_r, 0, pad_b)) if pad_b or pad_r else x


@torch.fx.wrap
@register_notrace_function
def _crop_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` cropped to the height and width of ``like`` (both (N, H, W, C)); unchanged when they match."""
    height, width = like.shape[1:3]
    if x.shape[1] == height and x.shape[2] == width:
        return x
    return x[:, :height, :width].contiguous()


class QKVLinear(nn.Module):
    """One Linear giving q (qk_dim), k (qk_dim) and v (dim); kept as a module for the official key ``qkv.qkv``."""

    def __init__(self, dim: int, qk_dim: int, bias: bool = True):
        super().__init__()
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.qkv(x)


class BiLevelRoutingAttention(nn.Module):
    """BRA on an (N, H, W, C) map: q, k, v projections, routed attention (:func:`routing_attention`), plus LePE (a
    depthwise conv on v, the "local context enhancement"), then the output projection ``wo``.

    The input is zero-padded at the bottom and right to a multiple of ``n_win`` before the projection, and the
    output cropped (the official ``auto_pad``): padded tokens take the projection's bias as q, k and v.
    Parameter names are the official ones (``qkv.qkv``, ``wo``, ``lepe``).
    """

    def __init__(self, dim: int, num_heads: int, n_win: int = 7, topk: int = 4, qk_dim: Optional[int] = None,
                 qk_scale: Optional[float] = None, side_dwconv: int = 5):
        super().__init__()
        self.dim = dim
        self.qk_dim = qk_dim or dim
        if self.qk_dim % num_heads or dim % num_heads:
            raise argument_error('BiLevelRoutingAttention', 'num_heads', num_heads,
                                 f'qk_dim ({self.qk_dim}) and dim ({dim}) must be divisible by num_heads')
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        self.scale = qk_scale or self.qk_dim ** -0.5  # the full qk width, as the official code
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv > 0 \
            else None
        self.qkv = QKVLinear(dim, self.qk_dim)
        self.wo = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(_pad_to_regions(x, self.n_win)).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        heads = self.num_heads
        out = routing_attention(q.unflatten(-1, (heads, -1)), k.unflatten(-1, (heads, -1)),
                                v.unflatten(-1, (heads, -1)), self.n_win, self.topk, self.scale).flatten(-2)
        if self.lepe is not None:
            out = out + _nhwc(self.lepe(_nchw(v)))
        return _crop_like(self.wo(out), x)


class AttentionLePE(nn.Module):
    """Full multi-head self-attention on an (N, H, W, C) map plus LePE (a depthwise conv on the *input*), as the
    official last stage (``topk=-2``); ``side_dwconv=0`` gives plain attention (``topk=-1``). Scale
    ``head_dim ** -0.5``; the qkv projection has no bias. Official names ``qkv``, ``proj``, ``lepe``."""

    def __init__(self, dim: int, num_heads: int = 8, side_dwconv: int = 5):
        super().__init__()
        if dim % num_heads:
            raise argument_error('AttentionLePE', 'num_heads', num_heads, f'dim ({dim}) must be divisible by num_heads')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv > 0 \
            else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = x.shape
        qkv = self.qkv(x).view(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, HW, head_dim)
        out = out.transpose(1, 2).reshape(batch, height, width, dim)
        if self.lepe is not None:
            out = out + _nhwc(self.lepe(_nchw(x)))
        return self.proj(out)


class DWConv(nn.Module):
    """3x3 depthwise conv on an (N, H, W, C) map, inside the MLP when ``mlp_dwconv`` (official key ``dwconv``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _nhwc(self.dwconv(_nchw(x)))


class BiFormerBlock(nn.Module):
    """``x + pos_embed(x)``, then pre-norm attention and MLP residuals, on (N, H, W, C) maps.

    ``topk > 0``: bi-level routing attention with ``n_win`` regions per side; ``-2``: full attention with LePE;
    ``-1``: full attention. MLP = Linear -> (3x3 depthwise conv if ``mlp_dwconv``) -> GELU -> Linear (official keys
    ``mlp.0``, ``mlp.3``).
    """

    def __init__(self, dim: int, num_heads: int, n_win: int = 7, topk: int = 4, qk_dim: Optional[int] = None,
                 qk_scale: Optional[float] = None, mlp_ratio: float = 3., mlp_dwconv: bool = False,
                 side_dwconv: int = 5, before_attn_dwconv: int = 3, drop_path: float = 0.):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, before_attn_dwconv, padding=before_attn_dwconv // 2, groups=dim) \
            if before_attn_dwconv > 0 else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(dim, num_heads, n_win=n_win, topk=topk, qk_dim=qk_dim,
                                                qk_scale=qk_scale, side_dwconv=side_dwconv)
        elif topk in (-1, -2):
            self.attn = AttentionLePE(dim, side_dwconv=side_dwconv if topk == -2 else 0)
        else:
            raise argument_error('BiFormerBlock', 'topk', topk, 'topk must be > 0 (routing attention), -1 (attention) '
                                 'or -2 (attention with LePE)')
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(mlp_ratio * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), DWConv(hidden) if mlp_dwconv else nn.Identity(), nn.GELU(),
                                 nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + _nhwc(self.pos_embed(_nchw(x)))
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BiFormerStage(nn.Sequential):
    """The blocks of one stage (official keys ``stages.{i}.{j}``): NCHW map in, blocks on the NHWC map, NCHW map
    out, so the stage's output is the stage feature (timm's FX feature extraction returns it). With
    ``grad_checkpointing`` each block runs under activation checkpointing."""

    grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _nhwc(x)
        for block in self:
            x = checkpointed(self.grad_checkpointing, block, x)
        return _nchw(x)


def _per_stage(name: str, value, kind=int) -> Tuple:
    values = tuple(value) if isinstance(value, Sequence) else (value,) * 4
    if len(values) != 4 or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise argument_error('BiFormer', name, value,
                             f'{name} must be an int or a sequence of 4 ints (one per stage), got {value!r}')
    return values


class BiFormer(ClassifierMixin, nn.Module):
    """BiFormer.

    Args:
        depths: blocks per stage.
        embed_dims: channels per stage.
        mlp_ratios: MLP expansion per stage.
        n_win: regions per side of the routing attention, one for all stages or one per stage (7 for 224² ImageNet;
            the official detection configs use 16, segmentation 8). Unused by stages with ``topk < 0``.
        topks: routed regions per stage; -2 = full attention with LePE (the official last stage), -1 = full
            attention.
        qk_dims: query/key width per stage (None: ``embed_dims``).
        head_dim: channels per head in the routing-attention stages (heads = qk_dim / head_dim); the full-attention
            stage uses 8 heads, as the official code.
        qk_scale: routing-attention logit scale (None: ``qk_dim ** -0.5``).
        side_dwconv: LePE kernel size (0: none).
        before_attn_dwconv: kernel of the depthwise conv position embedding before each block (0: none).
        mlp_dwconv: a 3x3 depthwise conv inside every MLP (off in the released models).
        in_chans, num_classes: input channels and classifier classes (0: no classifier).
        global_pool: ``'avg'`` (spatial mean, the official head) or ``''``.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linear in the block index over all blocks (official).
    """

    def __init__(self, depths: Sequence[int] = (2, 2, 8, 2), embed_dims: Sequence[int] = (64, 128, 256, 512),
                 mlp_ratios: Union[float, Sequence[float]] = 3, n_win: Union[int, Sequence[int]] = 7,
                 topks: Sequence[int] = (1, 4, 16, -2), qk_dims: Optional[Sequence[int]] = None, head_dim: int = 32,
                 qk_scale: Optional[float] = None, side_dwconv: int = 5, before_attn_dwconv: int = 3,
                 mlp_dwconv: bool = False, in_chans: int = 3, num_classes: int = 1000, global_pool: str = 'avg',
                 drop_rate: float = 0., drop_path_rate: float = 0.):
        super().__init__()
        depths, embed_dims, topks = _per_stage('depths', depths), _per_stage('embed_dims', embed_dims), \
            _per_stage('topks', topks)
        n_wins = _per_stage('n_win', n_win)
        mlp_ratios = tuple(mlp_ratios) if isinstance(mlp_ratios, Sequence) else (mlp_ratios,) * 4
        qk_dims = embed_dims if qk_dims is None else _per_stage('qk_dims', qk_dims)
        self.embed_dim = list(embed_dims)

        stem = nn.Sequential(
            nn.Conv2d(in_chans, embed_dims[0] // 2, 3, stride=2, padding=1), nn.BatchNorm2d(embed_dims[0] // 2),
            nn.GELU(), nn.Conv2d(embed_dims[0] // 2, embed_dims[0], 3, stride=2, padding=1),
            nn.BatchNorm2d(embed_dims[0]))
        self.downsample_layers = nn.ModuleList([stem] + [
            nn.Sequential(nn.Conv2d(embed_dims[i], embed_dims[i + 1], 3, stride=2, padding=1),
                          nn.BatchNorm2d(embed_dims[i + 1]))
            for i in range(3)])
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        for i in range(4):
            start = sum(depths[:i])
            self.stages.append(BiFormerStage(*[
                BiFormerBlock(embed_dims[i], qk_dims[i] // head_dim, n_win=n_wins[i], topk=topks[i], qk_dim=qk_dims[i],
                              qk_scale=qk_scale, mlp_ratio=mlp_ratios[i], mlp_dwconv=mlp_dwconv,
                              side_dwconv=side_dwconv, before_attn_dwconv=before_attn_dwconv, drop_path=dpr[start + j])
                for j in range(depths[i])]))
        self.feature_info = [dict(num_chs=embed_dims[i], reduction=4 * 2 ** i, module=f'stages.{i}')
                             for i in range(4)]
        self.norm = nn.BatchNorm2d(embed_dims[-1])
        self._init_classifier(embed_dims[-1], num_classes, global_pool, drop_rate)
        self.apply(init_linear_trunc_normal)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r'^downsample_layers\.0',
                    blocks=r'^stages\.(\d+)' if coarse else [
                        (r'^downsample_layers\.(\d+)', (0,)), (r'^stages\.(\d+)\.(\d+)', None), (r'^norm', (99999,))])

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Downsample and the blocks of stage i; NCHW in and out."""
        return self.stages[i](self.downsample_layers[i](x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the final normalised map (B, embed_dims[-1], H/32, W/32) (sides rounded up)."""
        for i in range(len(self.stages)):
            x = self._stage(i, x)
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False):
        """Stage outputs (strides 4, 8, 16, 32) for dense prediction, as contiguous NCHW maps.

        Args:
            indices: int n for the last n stages, or a list of stage indices (negative from the end); None: all.
            norm: apply the final BatchNorm to the last stage's output (the only one it is trained for).
            stop_early: stop after the last wanted stage (only with ``intermediates_only``).
            output_fmt: ``'NCHW'`` only.
            intermediates_only: return only the list of maps.
        """
        check_output_fmt(self, output_fmt, ('NCHW',))
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        stages = max_index + 1 if stop_early and intermediates_only else len(self.stages)
        intermediates = []
        for i in range(stages):
            x = self._stage(i, x)
            if i in take_indices:
                intermediates.append((self.norm(x) if norm and i == last else x).contiguous())
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def _num_levels(self) -> int:
        return len(self.stages)

    def _prune_levels(self, keep: int) -> None:
        self.stages = self.stages[:keep]
        self.downsample_layers = self.downsample_layers[:keep]


def checkpoint_filter_fn(state_dict: dict, model: BiFormer) -> dict:
    """Official BiFormer checkpoints -> this model: the ``model`` (official training checkpoints) or ``state_dict``
    entry, without a DDP ``module.`` prefix. Key names and shapes are already the official ones."""
    return unwrap_state_dict(state_dict)


def _create_biformer(variant: str, pretrained: bool = False, **kwargs) -> BiFormer:
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    return build_model_with_cfg(BiFormer, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=out_indices, feature_cls='getter'), **kwargs)


def _cfg(**kwargs) -> dict:
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7), 'crop_pct': .875,
        'interpolation': 'bicubic', 'fixed_input_size': False, 'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD, 'first_conv': 'downsample_layers.0.0', 'classifier': 'head',
        'license': 'mit', 'paper_ids': 'arXiv:2303.08810', 'origin_url': 'https://github.com/rayleizhu/BiFormer',
        **kwargs,
    }


# The official ImageNet-1k weights (dict key "model") are on OneDrive behind share links (in ``notes``) whose file
# name is always "content", so timm's URL cache would mix the three up: the cfgs are untagged (no download), and
# the downloaded file is passed instead (pretrained_cfg_overlay=dict(file=...), or TimmBackbone(pretrained=PATH)).
_ONEDRIVE = 'https://api.onedrive.com/v1.0/shares/{}/root/content'
default_cfgs = generate_default_cfgs({
    'biformer_tiny': _cfg(notes=(_ONEDRIVE.format('s!AkBbczdRlZvChHEOoGkgwgQzEDlM'),)),
    'biformer_small': _cfg(notes=(_ONEDRIVE.format('s!AkBbczdRlZvChHDyM-x9KWRBZ832'),)),
    'biformer_base': _cfg(notes=(_ONEDRIVE.format('s!AkBbczdRlZvChHI_XPhoadjaNxtO'),)),
})


@register_model
def biformer_tiny(pretrained: bool = False, **kwargs) -> BiFormer:
    """BiFormer-T: depths 2-2-8-2, widths 64-512 (13.1M params, 2.2 GMACs at 224², 81.4% ImageNet top-1)."""
    args = dict(depths=(2, 2, 8, 2), embed_dims=(64, 128, 256, 512))
    return _create_biformer('biformer_tiny', pretrained, **dict(args, **kwargs))


@register_model
def biformer_small(pretrained: bool = False, **kwargs) -> BiFormer:
    """BiFormer-S: depths 4-4-18-4, widths 64-512 (25.5M params, 4.5 GMACs, 83.8%)."""
    args = dict(depths=(4, 4, 18, 4), embed_dims=(64, 128, 256, 512))
    return _create_biformer('biformer_small', pretrained, **dict(args, **kwargs))


@register_model
def biformer_base(pretrained: bool = False, **kwargs) -> BiFormer:
    """BiFormer-B: depths 4-4-18-4, widths 96-768 (56.8M params, 9.8 GMACs, 84.3%)."""
    args = dict(depths=(4, 4, 18, 4), embed_dims=(96, 192, 384, 768))
    return _create_biformer('biformer_base', pretrained, **dict(args, **kwargs))
