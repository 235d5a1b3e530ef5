"""NAT and DiNAT: hierarchical transformers whose token mixer is (dilated) neighbourhood attention.

Papers: "Neighborhood Attention Transformer", Hassani et al., CVPR 2023 (arXiv:2204.07143); "Dilated Neighborhood
Attention Transformer", Hassani and Shi, 2022 (arXiv:2209.15001). Official code and weights:
https://github.com/SHI-Labs/Neighborhood-Attention-Transformer (``classification/nat.py``, ``dinat.py``).

Architecture (the official one): an overlapping tokenizer (two 3x3 stride-2 convolutions, LayerNorm), four levels
of pre-norm blocks ``x + gamma1 * attn(norm1(x))``, ``x + gamma2 * mlp(norm2(x))`` (``gamma`` only where the variant
uses layer scale) on channels-last maps, each level but the last ending in a 3x3 stride-2 convolution (no bias) with
a LayerNorm that doubles the width, a final LayerNorm, the spatial mean and a linear head. The attention is 7x7
neighbourhood attention with a per-layer relative position bias (``rpb``); DiNAT alternates non-dilated and dilated
layers with the official per-level dilations (8, 4, 2, 1 at 224²). DiNAT is NAT with dilations, as officially.

The state_dict layout is the official one, so the released checkpoints load through :func:`checkpoint_filter_fn`.
What differs from the official code:

* the attention runs on :func:`visionzoo.ops.neighborhood_attention` through
  :class:`visionzoo.layers.NeighborhoodAttention2D` (Triton on CUDA, the tiled PyTorch path with its own backward on
  CPU): no NATTEN at run time, and CPU training works;
* the timm contract (``forward_intermediates`` with the level outputs at strides 4/8/16/32 before the next
  downsampling, ``features_only``, pruning, gradient checkpointing, classifier reset); the official dense models add
  a LayerNorm on each output, which :class:`visionzoo.backbones.TimmBackbone` provides (``out_norm='LN'``);
* timm's ``drop_rate`` is the dropout before the classifier; the official ``drop_rate`` (after the tokenizer, the
  attention projection and in the MLPs) is ``proj_drop_rate`` here.

Input sizes: any. The tokenizer and the downsamplers round odd sides up (zero-padded strided convolutions); a map
smaller than ``kernel_size * dilation`` on a side is zero-padded at the bottom / right before the attention's
projection and cropped after, as the official (NATTEN <= 0.17) module does.
"""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, calculate_drop_path_rates, register_notrace_module
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers.neighborhood_attention import NeighborhoodAttention2D
from ..utils.options import argument_error
from ._checkpoint import unwrap_state_dict
from ._contract import ClassifierMixin, check_output_fmt, init_linear_trunc_normal

__all__ = ['NAT', 'DiNAT', 'NatBlock', 'NatLevel', 'ConvTokenizer', 'ConvDownsampler', 'checkpoint_filter_fn']

# FX tracing: the layer pads maps smaller than its window (shape-dependent), so a traced model calls it as one node
register_notrace_module(NeighborhoodAttention2D)

# per-output LayerNorms of the official detection/segmentation backbones (TimmBackbone maps them to out_norms)
OFFICIAL_OUT_NORMS = r'^norm(\d+)\.(.*)$'


class ConvTokenizer(nn.Module):
    """Two 3x3 stride-2 convolutions (to ``embed_dim // 2``, then ``embed_dim``) and a LayerNorm on the channels-last
    map: (B, C, H, W) -> (B, H / 4, W / 4, embed_dim). Official keys ``proj.0``, ``proj.1``, ``norm``."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_chans, embed_dim // 2, 3, stride=2, padding=1),
                                  nn.Conv2d(embed_dim // 2, embed_dim, 3, stride=2, padding=1))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """3x3 stride-2 convolution without bias from ``dim`` to ``2 * dim``, then a LayerNorm; channels-last in and
    out. Official keys ``reduction``, ``norm``."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, 3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class NatBlock(nn.Module):
    """The official ``NATLayer``: ``x + gamma1 * attn(norm1(x))``, then ``x + gamma2 * mlp(norm2(x))`` on a
    (B, H, W, C) map, with (dilated) neighbourhood attention and a GELU MLP. ``layer_scale`` None: no ``gamma``
    parameters (NAT-Mini/Tiny, DiNAT-Mini/Tiny/Small/Large)."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 7, dilation: int = 1, mlp_ratio: float = 4.,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, proj_drop: float = 0.,
                 drop_path: float = 0., layer_scale: Optional[float] = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(dim, num_heads, kernel_size, dilation=dilation, qkv_bias=qkv_bias,
                                            qk_scale=qk_scale, rel_pos_bias=True, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_scale:
            x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x)))
            return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class NatLevel(nn.Module):
    """The official ``NATBlock`` (one level): ``blocks``, then ``downsample`` (None in the last level). The model
    runs them itself, so that the level output before the downsampling is the stage feature."""

    def __init__(self, blocks: List[NatBlock], downsample: Optional[ConvDownsampler]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


def _per_level(name: str, value, levels: int) -> tuple:
    values = tuple(value) if isinstance(value, Sequence) else (value,) * levels
    if len(values) != levels:
        raise argument_error('NAT', name, value, f'{name} must have one entry per level ({levels}), got {value!r}')
    return values


class NAT(ClassifierMixin, nn.Module):
    """Neighborhood Attention Transformer (and, with ``dilations``, DiNAT).

    Args:
        embed_dim: channels of the first level (doubled by each downsampler).
        depths: blocks per level.
        num_heads: attention heads per level.
        mlp_ratio: MLP expansion.
        kernel_size: neighbourhood size (7 in every released variant but DiNAT-L 11x11).
        dilations: per level, one dilation per block (DiNAT); None: 1 everywhere (NAT).
        layer_scale: initial per-channel layer scale (``gamma1``/``gamma2``); None: no layer scale.
        qkv_bias, qk_scale: attention projection bias and logit scale (None: ``head_dim ** -0.5``).
        in_chans, num_classes: input channels and classifier classes (0: no classifier).
        global_pool: ``'avg'`` (spatial mean, as official) or ``''``.
        drop_rate: dropout before the classifier (none officially).
        proj_drop_rate: the official ``drop_rate``: after the tokenizer, the attention projection and in the MLPs.
        attn_drop_rate: must be 0 (the fused op forms no attention weights; the official recipes use 0).
        drop_path_rate: stochastic depth, linear over all blocks (official).
    """

    output_fmt = 'NHWC'  # features are channels-last maps, as timm's Swin (its hook and FX extractors read it)

    def __init__(self, embed_dim: int = 64, depths: Sequence[int] = (3, 4, 6, 5),
                 num_heads: Sequence[int] = (2, 4, 8, 16), mlp_ratio: float = 3., kernel_size: int = 7,
                 dilations: Optional[Sequence[Sequence[int]]] = None, layer_scale: Optional[float] = None,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = 'avg', drop_rate: float = 0.,
                 proj_drop_rate: float = 0., attn_drop_rate: float = 0., drop_path_rate: float = 0.):
        super().__init__()
        depths = tuple(depths)
        if not depths or not all(isinstance(d, int) and d > 0 for d in depths):
            raise argument_error(type(self).__name__, 'depths', depths, 'depths must be positive ints, one per level')
        num_heads = _per_level('num_heads', num_heads, len(depths))
        if dilations is None:
            dilations = [(1,) * d for d in depths]
        dilations = [tuple(d) for d in _per_level('dilations', dilations, len(depths))]
        if [len(d) for d in dilations] != list(depths):
            raise argument_error(type(self).__name__, 'dilations', dilations,
                                 f'dilations must give one dilation per block of each level (depths {depths})')
        if attn_drop_rate != 0.:
            raise argument_error(type(self).__name__, 'attn_drop_rate', attn_drop_rate,
                                 'attn_drop_rate must be 0 (the fused attention forms no attention weights)')
        self.embed_dim = embed_dim
        self.kernel_size = kernel_size
        self.patch_embed = ConvTokenizer(in_chans, embed_dim)
        self.pos_drop = nn.Dropout(proj_drop_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        self.levels = nn.ModuleList()
        self.feature_info = []
        for i, depth in enumerate(depths):
            dim = embed_dim * 2 ** i
            first = sum(depths[:i])
            blocks = [NatBlock(dim, num_heads[i], kernel_size, dilations[i][j], mlp_ratio, qkv_bias, qk_scale,
                               proj_drop_rate, dpr[first + j], layer_scale) for j in range(depth)]
            self.levels.append(NatLevel(blocks, ConvDownsampler(dim) if i < len(depths) - 1 else None))
            # the blocks, not the level: the level's downsample belongs to the next stride
            self.feature_info.append(dict(module=f'levels.{i}.blocks', num_chs=dim, reduction=4 * 2 ** i))
        num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(num_features)
        self._init_classifier(num_features, num_classes, global_pool, drop_rate)
        self.apply(init_linear_trunc_normal)

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set:
        return {'rpb'}

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {n for n, _ in self.named_parameters() if n.endswith('.rpb')}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r'^patch_embed', blocks=r'^levels\.(\d+)' if coarse else [
            (r'^levels\.(\d+)\.downsample', (0,)), (r'^levels\.(\d+)\.blocks\.(\d+)', None), (r'^norm', (99999,))])

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def _levels(self, x: torch.Tensor, last: int):
        """Yields each level's output (B, H, W, C) before its downsampling, up to level ``last``."""
        x = self.pos_drop(self.patch_embed(x))
        for i in range(last + 1):
            if i > 0:
                x = self.levels[i - 1].downsample(x)
            for block in self.levels[i].blocks:
                x = self._checkpointed(block, x)
            yield x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the final normalised map (B, H / 32, W / 32, num_features) (sides rounded up)."""
        for x in self._levels(x, self.num_levels - 1):
            pass
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, H, W, C) map -> logits (or pooled features): spatial mean, dropout, classifier."""
        if self.global_pool == 'avg':
            x = x.mean((1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False):
        """Level outputs (strides 4, 8, 16, 32) before the next downsampling.

        Args:
            indices: int n for the last n levels, or a list of level indices (negative from the end); None: all.
            norm: apply the final LayerNorm to the last level's output (the only one it is trained for).
            stop_early: stop after the last wanted level (only with ``intermediates_only``).
            output_fmt: ``'NCHW'`` or ``'NHWC'``.
            intermediates_only: return only the list of maps.
        """
        check_output_fmt(self, output_fmt, ('NCHW', 'NHWC'))
        take_indices, max_index = feature_take_indices(self.num_levels, indices)
        last = max_index if stop_early and intermediates_only else self.num_levels - 1
        intermediates = []
        for i, x in enumerate(self._levels(x, last)):
            if i in take_indices:
                y = self.norm(x) if norm and i == self.num_levels - 1 else x
                intermediates.append(y.permute(0, 3, 1, 2).contiguous() if output_fmt == 'NCHW' else y)
        return intermediates if intermediates_only else (self.norm(x), intermediates)

    def _num_levels(self) -> int:
        return self.num_levels

    def _prune_levels(self, keep: int) -> None:
        self.levels = self.levels[:keep]
        self.levels[-1].downsample = None


class DiNAT(NAT):
    """Dilated NAT: :class:`NAT` with ``dilations`` (as officially, the same module tree and keys)."""


def checkpoint_filter_fn(state_dict: dict, model: Optional[NAT] = None) -> dict:
    """Official NAT / DiNAT classification checkpoints -> this model: a bare state dict, or one under ``model`` /
    ``state_dict`` (timm training checkpoints), without a DDP ``module.`` prefix. Key names and shapes are the official
    ones (NATTEN's attention module: ``attn.qkv``, ``attn.rpb``, ``attn.proj``)."""
    return unwrap_state_dict(state_dict)


def _create_nat(variant: str, pretrained: bool = False, **kwargs) -> NAT:
    out_indices = kwargs.pop('out_indices', tuple(range(len(kwargs.get('depths', (0,) * 4)))))
    cls = DiNAT if variant.startswith('dinat') else NAT
    return build_model_with_cfg(cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=out_indices, feature_cls='getter'), **kwargs)


def _cfg(url: str = '', **kwargs) -> dict:
    # official evaluation: timm's validate.py with the default ImageNet cfg (crop 0.875, bicubic, ImageNet mean/std)
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7), 'crop_pct': .875,
        'interpolation': 'bicubic', 'fixed_input_size': False, 'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD, 'first_conv': 'patch_embed.proj.0', 'classifier': 'head', 'license': 'mit',
        'origin_url': 'https://github.com/SHI-Labs/Neighborhood-Attention-Transformer', **kwargs,
    }


_NAT = 'https://shi-labs.com/projects/nat/checkpoints/CLS/'
_DINAT = 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/'
# the official download locations (classification/nat.py, dinat.py ``model_urls``); fetched only with pretrained=True
default_cfgs = generate_default_cfgs({
    'nat_mini.in1k': _cfg(_NAT + 'nat_mini.pth', paper_ids='arXiv:2204.07143'),
    'nat_tiny.in1k': _cfg(_NAT + 'nat_tiny.pth', paper_ids='arXiv:2204.07143'),
    'nat_small.in1k': _cfg(_NAT + 'nat_small.pth', paper_ids='arXiv:2204.07143'),
    'nat_base.in1k': _cfg(_NAT + 'nat_base.pth', paper_ids='arXiv:2204.07143'),
    'dinat_mini.in1k': _cfg(_DINAT + 'dinat_mini_in1k_224.pth', paper_ids='arXiv:2209.15001'),
    'dinat_tiny.in1k': _cfg(_DINAT + 'dinat_tiny_in1k_224.pth', paper_ids='arXiv:2209.15001'),
    'dinat_small.in1k': _cfg(_DINAT + 'dinat_small_in1k_224.pth', paper_ids='arXiv:2209.15001'),
    'dinat_base.in1k': _cfg(_DINAT + 'dinat_base_in1k_224.pth', paper_ids='arXiv:2209.15001'),
    'dinat_large.in22k_ft_in1k': _cfg(_DINAT + 'dinat_large_in22k_in1k_224.pth', paper_ids='arXiv:2209.15001'),
    'dinat_large_384.in22k_ft_in1k': _cfg(_DINAT + 'dinat_large_in22k_in1k_384.pth', input_size=(3, 384, 384),
                                          pool_size=(12, 12), crop_pct=1.0, paper_ids='arXiv:2209.15001'),
})


def _arch(embed_dim: int, depths: tuple, num_heads: tuple, mlp_ratio: float, kwargs: dict,
          layer_scale: Optional[float] = None, dilations: Optional[tuple] = None) -> dict:
    """Official sizes, overridable by the caller's kwargs."""
    return dict(dict(embed_dim=embed_dim, depths=depths, num_heads=num_heads, mlp_ratio=mlp_ratio,
                     layer_scale=layer_scale, dilations=dilations), **kwargs)


def _dilations(depths: Sequence[int], per_level: Sequence[int] = (8, 4, 2, 1)) -> list:
    """DiNAT's pattern: each level alternates dilation 1 and its dilated value, starting with 1 (official lists)."""
    return [[1 if j % 2 == 0 else d for j in range(depth)] for depth, d in zip(depths, per_level)]


def _dinat(embed_dim, depths, num_heads, mlp_ratio, kwargs, layer_scale=None, per_level=(8, 4, 2, 1)) -> dict:
    dilations = _dilations(kwargs.get('depths', depths), per_level)
    return _arch(embed_dim, depths, num_heads, mlp_ratio, kwargs, layer_scale, dilations)


@register_model
def nat_mini(pretrained: bool = False, **kwargs) -> NAT:
    """NAT-Mini: width 64, depths 3-4-6-5, heads 2-4-8-16, MLP ratio 3 (20M params, 2.7 GFLOPs, 81.8%)."""
    return _create_nat('nat_mini', pretrained, **_arch(64, (3, 4, 6, 5), (2, 4, 8, 16), 3, kwargs))


@register_model
def nat_tiny(pretrained: bool = False, **kwargs) -> NAT:
    """NAT-Tiny: width 64, depths 3-4-18-5, heads 2-4-8-16, MLP ratio 3 (28M, 4.3 GFLOPs, 83.2%)."""
    return _create_nat('nat_tiny', pretrained, **_arch(64, (3, 4, 18, 5), (2, 4, 8, 16), 3, kwargs))


@register_model
def nat_small(pretrained: bool = False, **kwargs) -> NAT:
    """NAT-Small: width 96, depths 3-4-18-5, heads 3-6-12-24, MLP ratio 2, layer scale 1e-5 (51M, 7.8G, 83.7%)."""
    return _create_nat('nat_small', pretrained, **_arch(96, (3, 4, 18, 5), (3, 6, 12, 24), 2, kwargs, 1e-5))


@register_model
def nat_base(pretrained: bool = False, **kwargs) -> NAT:
    """NAT-Base: width 128, depths 3-4-18-5, heads 4-8-16-32, MLP ratio 2, layer scale 1e-5 (90M, 13.7G, 84.3%)."""
    return _create_nat('nat_base', pretrained, **_arch(128, (3, 4, 18, 5), (4, 8, 16, 32), 2, kwargs, 1e-5))


@register_model
def dinat_mini(pretrained: bool = False, **kwargs) -> DiNAT:
    """DiNAT-Mini: NAT-Mini with dilations 8/4/2/1 on every other layer (20M, 2.7 GFLOPs, 81.8%)."""
    return _create_nat('dinat_mini', pretrained, **_dinat(64, (3, 4, 6, 5), (2, 4, 8, 16), 3, kwargs))


@register_model
def dinat_tiny(pretrained: bool = False, **kwargs) -> DiNAT:
    """DiNAT-Tiny: NAT-Tiny with dilations 8/4/2/1 (28M, 4.3 GFLOPs, 82.7%)."""
    return _create_nat('dinat_tiny', pretrained, **_dinat(64, (3, 4, 18, 5), (2, 4, 8, 16), 3, kwargs))


@register_model
def dinat_small(pretrained: bool = False, **kwargs) -> DiNAT:
    """DiNAT-Small: NAT-Small with dilations 8/4/2/1 and, officially, no layer scale (51M, 7.8 GFLOPs, 83.8%)."""
    return _create_nat('dinat_small', pretrained, **_dinat(96, (3, 4, 18, 5), (3, 6, 12, 24), 2, kwargs))


@register_model
def dinat_base(pretrained: bool = False, **kwargs) -> DiNAT:
    """DiNAT-Base: NAT-Base with dilations 8/4/2/1, layer scale 1e-5 (90M, 13.7 GFLOPs, 84.4%)."""
    return _create_nat('dinat_base', pretrained, **_dinat(128, (3, 4, 18, 5), (4, 8, 16, 32), 2, kwargs, 1e-5))


@register_model
def dinat_large(pretrained: bool = False, **kwargs) -> DiNAT:
    """DiNAT-Large at 224²: width 192, heads 6-12-24-48, MLP ratio 2, dilations 8/4/2/1; ImageNet-22k pre-trained,
    ImageNet-1k fine-tuned (200M, 30.6 GFLOPs, 86.6%)."""
    return _create_nat('dinat_large', pretrained, **_dinat(192, (3, 4, 18, 5), (6, 12, 24, 48), 2, kwargs))


@register_model
def dinat_large_384(pretrained: bool = False, **kwargs) -> DiNAT:
    """DiNAT-Large at 384²: as :func:`dinat_large` with dilations 13/6/3/1 (200M, 89.7 GFLOPs, 87.4%)."""
    return _create_nat('dinat_large_384', pretrained,
                       **_dinat(192, (3, 4, 18, 5), (6, 12, 24, 48), 2, kwargs, per_level=(13, 6, 3, 1)))
