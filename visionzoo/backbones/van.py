"""Visual Attention Network (VAN): a four-stage convolutional network whose token mixer is large kernel attention.

Paper: "Visual Attention Network", Guo et al., CVMJ 2023 (arXiv:2202.09741). Official code and weights:
https://github.com/Visual-Attention-Network/VAN-Classification.

Large kernel attention (LKA) decomposes a 21x21 depthwise convolution into a 5x5 depthwise convolution, a 7x7
depthwise convolution with dilation 3 and a 1x1 convolution, and multiplies the result with its input. A block is
``x + ls1 * attn(bn1(x))`` followed by ``x + ls2 * mlp(bn2(x))``; every stage ends with a LayerNorm (eps 1e-6) whose
output feeds the next stage and is the stage's feature map.

The architecture and state_dict layout are the official ones, so official checkpoints load unchanged;
:func:`checkpoint_filter_fn` also reads mmpretrain's layout. What this file adds to the official code:

* the timm contract (``forward_intermediates``, ``features_only``, gradient checkpointing, classifier reset);
* :meth:`VanBlock.fuse` and :meth:`OverlapPatchEmbed.fuse` for inference (:func:`visionzoo.layers.fuse.fuse`): every
  BatchNorm and layer scale is folded into a neighbouring convolution.

Input sizes: every convolution pads by half its (dilated) kernel, so any input works; a side of ``s`` pixels gives
maps of ``ceil(s / 4)``, ``ceil(s / 8)``, ``ceil(s / 16)`` and ``ceil(s / 32)`` (odd sides round up, as a
zero-padded strided convolution does; sides under 32 end in a 1-pixel map).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.layers import DropPath, LayerNorm2d, calculate_drop_path_rates
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers.fuse import bn_affine, fold_affine_before, fold_bn_into
from ..utils.options import argument_error
from ._checkpoint import rename_keys, unwrap_state_dict
from ._contract import ClassifierMixin, check_output_fmt, init_linear_trunc_normal

__all__ = ['VisualAttentionNetwork', 'VanBlock', 'FusedVanBlock', 'LargeKernelAttention', 'checkpoint_filter_fn']


class LargeKernelAttention(nn.Module):
    """LKA: ``x * conv1(conv_spatial(conv0(x)))`` with conv0 a 5x5 depthwise convolution, conv_spatial a 7x7
    depthwise convolution with dilation 3 (spanning 19 pixels, padding 9; 23 together with conv0) and conv1 a 1x1
    convolution."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class SpatialAttention(nn.Module):
    """``proj_2(lka(gelu(proj_1(x)))) + x`` (the official ``Attention``, with its inner shortcut)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LargeKernelAttention(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class DepthwiseConv(nn.Module):
    """3x3 depthwise convolution, wrapped only to keep the official key ``mlp.dwconv.dwconv``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class ConvMlp(nn.Module):
    """1x1 conv -> 3x3 depthwise conv -> GELU -> 1x1 conv, with dropout after the activation and at the end."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.dwconv = DepthwiseConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


@torch.no_grad()
def _scale_output(conv: nn.Conv2d, scale: torch.Tensor, shift: Optional[torch.Tensor] = None) -> nn.Conv2d:
    """A new 1x1 convolution computing ``scale * conv(x) + shift`` (per output channel)."""
    new = nn.Conv2d(conv.in_channels, conv.out_channels, 1, device=conv.weight.device, dtype=conv.weight.dtype)
    new.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    new.bias.copy_(conv.bias * scale + (0. if shift is None else shift))
    return new


class VanBlock(nn.Module):
    """``x + ls1 * attn(norm1(x))``, then ``x + ls2 * mlp(norm2(x))``; BatchNorms, per-channel layer scales."""

    def __init__(self, dim: int, mlp_ratio: float = 4., proj_drop: float = 0., drop_path: float = 0.,
                 layer_scale_init_value: float = 1e-2):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))

    @torch.no_grad()
    def fuse(self) -> 'FusedVanBlock':
        """The eval-mode block with no BatchNorm, layer scale or inner shortcut (see :class:`FusedVanBlock`)."""
        if self.training:
            raise ValueError('VanBlock.fuse: the block must be in eval mode (BatchNorm running statistics are folded)')
        s1, t1 = bn_affine(self.norm1)
        s2, t2 = bn_affine(self.norm2)
        ls1, ls2 = self.layer_scale_1, self.layer_scale_2
        attn, mlp = self.attn, self.mlp
        return FusedVanBlock(
            proj_1=fold_affine_before(s1, t1, attn.proj_1), activation=attn.activation,
            spatial_gating_unit=attn.spatial_gating_unit, proj_2=_scale_output(attn.proj_2, ls1, ls1 * t1),
            shortcut_scale=1. + ls1 * s1,
            fc1=fold_affine_before(s2, t2, mlp.fc1), dwconv=mlp.dwconv, act=mlp.act, fc2=_scale_output(mlp.fc2, ls2))


class FusedVanBlock(nn.Module):
    """Inference form of :class:`VanBlock` (eval mode only).

    With ``norm1(x) = s1 * x + t1``, the attention half ``x + ls1 * (proj_2(u) + s1 * x + t1)`` becomes
    ``proj_2'(u) + (1 + ls1 * s1) * x``: ``norm1`` folds into ``proj_1`` (a 1x1 convolution, so the shift is exact),
    ``ls1`` and ``ls1 * t1`` into ``proj_2``, and the inner shortcut, the outer residual and ``norm1`` collapse
    into one per-channel multiply-add (``torch.addcmul``). The MLP half folds ``norm2`` into ``fc1`` (1x1) and
    ``ls2`` into ``fc2``. Per block this removes two BatchNorms, two layer-scale products and one addition.
    """

    def __init__(self, proj_1: nn.Conv2d, activation: nn.Module, spatial_gating_unit: nn.Module, proj_2: nn.Conv2d,
                 shortcut_scale: torch.Tensor, fc1: nn.Conv2d, dwconv: nn.Module, act: nn.Module, fc2: nn.Conv2d):
        super().__init__()
        self.proj_1, self.activation, self.spatial_gating_unit, self.proj_2 = (
            proj_1, activation, spatial_gating_unit, proj_2)
        self.register_buffer('shortcut_scale', shortcut_scale.detach().reshape(-1, 1, 1).clone())
        self.fc1, self.dwconv, self.act, self.fc2 = fc1, dwconv, act, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        x = torch.addcmul(attn, x, self.shortcut_scale)
        return x + self.fc2(self.act(self.dwconv(self.fc1(x))))


class OverlapPatchEmbed(nn.Module):
    """Strided convolution (kernel ``patch_size``, padding ``patch_size // 2``) followed by BatchNorm."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))

    @torch.no_grad()
    def fuse(self) -> 'OverlapPatchEmbed':
        """Fold the BatchNorm into the convolution (eval mode only); returns ``self``."""
        if isinstance(self.norm, nn.BatchNorm2d):
            if self.training:
                raise ValueError('OverlapPatchEmbed.fuse: the module must be in eval mode')
            self.proj, self.norm = fold_bn_into(self.proj, self.norm), nn.Identity()
        return self


class VisualAttentionNetwork(ClassifierMixin, nn.Module):
    """Visual Attention Network (VAN).

    Stage ``i`` (1-based attribute names, as official) is ``patch_embed{i}`` (7x7 stride 4 for the first stage,
    3x3 stride 2 after), the blocks ``block{i}`` and the LayerNorm ``norm{i}``; its normalised output feeds the next
    stage. The classifier averages the last stage's normalised map.

    Args:
        in_chans: input channels.
        num_classes: classifier classes (0 for no classifier).
        global_pool: ``'avg'`` (mean over the final map, as official) or ``''`` (no pooling).
        embed_dims: channels of each stage.
        depths: blocks in each stage.
        mlp_ratios: MLP expansion of each stage.
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout inside the MLPs (the official ``drop_rate``).
        drop_path_rate: stochastic depth, linear in the block index from 0 to this rate (as official).
        layer_scale_init_value: initial per-channel layer scale.
        norm_eps: epsilon of the stage LayerNorms (1e-6 official; mmpretrain builds 1e-5).
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, global_pool: str = 'avg',
                 embed_dims: Sequence[int] = (32, 64, 160, 256), depths: Sequence[int] = (3, 3, 5, 2),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), drop_rate: float = 0., proj_drop_rate: float = 0.,
                 drop_path_rate: float = 0., layer_scale_init_value: float = 1e-2, norm_eps: float = 1e-6):
        super().__init__()
        if not len(embed_dims) == len(depths) == len(mlp_ratios) or not depths:
            raise argument_error(type(self).__name__, 'depths', depths,
                                 f'embed_dims, depths and mlp_ratios must have one entry per stage (at least one), '
                                 f'got {len(embed_dims)}, {len(depths)} and {len(mlp_ratios)} entries')
        self.num_stages = len(depths)
        self.embed_dims = tuple(embed_dims)

        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        self.feature_info = []
        first = 0
        for i, (dim, depth, ratio) in enumerate(zip(embed_dims, depths, mlp_ratios)):
            patch_embed = OverlapPatchEmbed(7 if i == 0 else 3, 4 if i == 0 else 2,
                                            in_chans if i == 0 else embed_dims[i - 1], dim)
            blocks = nn.ModuleList([
                VanBlock(dim, ratio, proj_drop=proj_drop_rate, drop_path=dpr[first + j],
                         layer_scale_init_value=layer_scale_init_value)
                for j in range(depth)])
            first += depth
            self.add_module(f'patch_embed{i + 1}', patch_embed)
            self.add_module(f'block{i + 1}', blocks)
            self.add_module(f'norm{i + 1}', LayerNorm2d(dim, eps=norm_eps))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f'norm{i + 1}'))
        self._init_classifier(embed_dims[-1], num_classes, global_pool, drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Official initialisation: He-normal convolutions (fan-out per group), truncated-normal Linear layers, zero
        biases; norms keep PyTorch's defaults."""
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0., (2. / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        else:
            init_linear_trunc_normal(m)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        if coarse:
            return dict(stem=r'^patch_embed1', blocks=r'^(?:patch_embed|block|norm)(\d+)')
        return dict(stem=r'^patch_embed1',
                    blocks=[(r'^patch_embed(\d+)', (0,)), (r'^block(\d+)\.(\d+)', None), (r'^norm(\d+)', (99999,))])

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``i`` (0-based): patch embedding, blocks, LayerNorm; NCHW in and out."""
        x = getattr(self, f'patch_embed{i + 1}')(x)
        for block in getattr(self, f'block{i + 1}'):
            x = self._checkpointed(block, x)
        return getattr(self, f'norm{i + 1}')(x).contiguous()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the last stage's normalised map (B, embed_dims[-1], ceil(H / 32), ceil(W / 32))."""
        for i in range(self.num_stages):
            x = self._stage(i, x)
        return x

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False):
        """Stage outputs (strides 4, 8, 16, 32), each after its stage LayerNorm.

        Args:
            indices: int n for the last n stages, or a list of stage indices (negative from the end); None: all.
            norm: accepted for the timm interface; has no effect, since every stage output is already normalised by
                its own ``norm{i}`` (which also feeds the next stage).
            stop_early: stop after the last wanted stage (only with ``intermediates_only``).
            output_fmt: ``'NCHW'`` or ``'NHWC'``.
            intermediates_only: return only the list of maps.
        """
        check_output_fmt(self, output_fmt, ('NCHW', 'NHWC'))
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = max_index if stop_early and intermediates_only else self.num_stages - 1
        intermediates = []
        for i in range(last + 1):
            x = self._stage(i, x)
            if i in take_indices:
                intermediates.append(x if output_fmt == 'NCHW' else x.permute(0, 2, 3, 1))
        if intermediates_only:
            return intermediates
        return x, intermediates

    # the stage norms stay whatever ``prune_norm`` says: they are part of the stage outputs, not a final norm
    FINAL_NORM = None

    def _num_levels(self) -> int:
        return self.num_stages

    def _prune_levels(self, keep: int) -> None:
        for i in range(keep, self.num_stages):
            for name in ('patch_embed', 'block', 'norm'):
                delattr(self, f'{name}{i + 1}')
        self.num_stages = keep


_MMPRETRAIN_RENAMES = (
    (r'^backbone\.', ''),
    (r'^patch_embed(\d+)\.projection\.', r'patch_embed\1.proj.'),
    (r'^blocks(\d+)\.', r'block\1.'),
    (r'\.spatial_gating_unit\.DW_conv\.', '.spatial_gating_unit.conv0.'),
    (r'\.spatial_gating_unit\.DW_D_conv\.', '.spatial_gating_unit.conv_spatial.'),
    (r'\.mlp\.dwconv\.(weight|bias)$', r'.mlp.dwconv.dwconv.\1'),
    (r'^head\.fc\.', 'head.'),
)


def checkpoint_filter_fn(state_dict: dict, model: VisualAttentionNetwork) -> dict:
    """Official VAN checkpoints and mmpretrain VAN checkpoints -> this model.

    Accepts a bare state dict or one wrapped in ``state_dict`` / ``model``, with or without a DDP ``module.``
    prefix. mmpretrain's layout (``backbone.`` prefix, ``patch_embed{i}.projection``, ``blocks{i}``, ``DW_conv`` /
    ``DW_D_conv``, ``mlp.dwconv``, ``head.fc``) is renamed to the official one; its ``data_preprocessor`` buffers
    are dropped. mmpretrain builds its stage LayerNorms with eps 1e-5 instead of 1e-6: the tensors are the same,
    pass ``norm_eps=1e-5`` to reproduce its outputs exactly.
    """
    state_dict = {k: v for k, v in unwrap_state_dict(state_dict).items() if not k.startswith('data_preprocessor.')}
    return rename_keys(state_dict, _MMPRETRAIN_RENAMES)


def _create_van(variant: str, pretrained: bool = False, **kwargs) -> VisualAttentionNetwork:
    out_indices = kwargs.pop('out_indices', tuple(range(len(kwargs.get('depths', (3, 3, 5, 2))))))
    return build_model_with_cfg(VisualAttentionNetwork, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=out_indices, feature_cls='getter'), **kwargs)


def _cfg(**kwargs) -> dict:
    # Official evaluation (timm 0.4.12 validate.py with the model's default_cfg, the ViT ``_cfg``): 224 input,
    # center crop 0.9, bicubic, mean = std = 0.5; mmpretrain's converted configs use the same (resize 248, crop 224,
    # mean = std = 127.5).
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7), 'crop_pct': .9,
        'interpolation': 'bicubic', 'fixed_input_size': False, 'mean': IMAGENET_INCEPTION_MEAN,
        'std': IMAGENET_INCEPTION_STD, 'first_conv': 'patch_embed1.proj', 'classifier': 'head',
        'license': 'apache-2.0', 'paper_ids': 'arXiv:2202.09741',
        'origin_url': 'https://github.com/Visual-Attention-Network/VAN-Classification', **kwargs,
    }


# Official ImageNet-1k weights (timm training checkpoints, key "state_dict"). B4-B6 were trained only for the
# segmentation repository (B5/B6 on ImageNet-22k) and have no stable download location: no weights here.
default_cfgs = generate_default_cfgs({
    'van_b0.in1k': _cfg(hf_hub_id='Visual-Attention-Network/VAN-Tiny-original', hf_hub_filename='van_tiny_754.pth.tar'),
    'van_b1.in1k': _cfg(hf_hub_id='Visual-Attention-Network/VAN-Small-original',
                        hf_hub_filename='van_small_811.pth.tar'),
    'van_b2.in1k': _cfg(hf_hub_id='Visual-Attention-Network/VAN-Base-original', hf_hub_filename='van_base_828.pth.tar'),
    'van_b3.in1k': _cfg(hf_hub_id='Visual-Attention-Network/VAN-Large-original',
                        hf_hub_filename='van_large_839.pth.tar'),
    'van_b4': _cfg(),
    'van_b5': _cfg(),
    'van_b6': _cfg(),
})


def _arch(embed_dims: Tuple[int, ...], depths: Tuple[int, ...], /, **kwargs) -> dict:
    """Official widths and depths, overridable by the caller's kwargs; MLP ratios 8-8-4-4 in every variant."""
    return dict(dict(embed_dims=embed_dims, depths=depths, mlp_ratios=(8, 8, 4, 4)), **kwargs)


@register_model
def van_b0(pretrained: bool = False, **kwargs) -> VisualAttentionNetwork:
    """VAN-B0 (tiny): dims 32-64-160-256, depths 3-3-5-2 (4.11M params, 0.9 GFLOPs, 75.4% ImageNet top-1)."""
    return _create_van('van_b0', pretrained, **_arch((32, 64, 160, 256), (3, 3, 5, 2), **kwargs))


@register_model
def van_b1(pretrained: bool = False, **kwargs) -> VisualAttentionNetwork:
    """VAN-B1 (small): dims 64-128-320-512, depths 2-2-4-2 (13.86M params, 2.5 GFLOPs, 81.1%)."""
    return _create_van('van_b1', pretrained, **_arch((64, 128, 320, 512), (2, 2, 4, 2), **kwargs))


@register_model
def van_b2(pretrained: bool = False, **kwargs) -> VisualAttentionNetwork:
    """VAN-B2 (base): dims 64-128-320-512, depths 3-3-12-3 (26.58M params, 5.0 GFLOPs, 82.8%)."""
    return _create_van('van_b2', pretrained, **_arch((64, 128, 320, 512), (3, 3, 12, 3), **kwargs))


@register_model
def van_b3(pretrained: bool = False, **kwargs) -> VisualAttentionNetwork:
    """VAN-B3 (large): dims 64-128-320-512, depths 3-5-27-3 (44.77M params, 9.0 GFLOPs, 83.9%)."""
    return _create_van('van_b3', pretrained, **_arch((64, 128, 320, 512), (3, 5, 27, 3), **kwargs))


@register_model
def van_b4(pretrained: bool = False, **kwargs) -> VisualAttentionNetwork:
    """VAN-B4: dims 64-128-320-512, depths 3-6-40-3 (60.28M params; no released classification weights)."""
    return _create_van('van_b4', pretrained, **_arch((64, 128, 320, 512), (3, 6, 40, 3), **kwargs))


@register_model
def van_b5(pretrained: bool = False, **kwargs) -> VisualAttentionNetwork:
    """VAN-B5: dims 96-192-480-768, depths 3-3-24-3 (89.97M params; ImageNet-22k pre-training only)."""
    return _create_van('van_b5', pretrained, **_arch((96, 192, 480, 768), (3, 3, 24, 3), **kwargs))


@register_model
def van_b6(pretrained: bool = False, **kwargs) -> VisualAttentionNetwork:
    """VAN-B6: dims 96-192-384-768, depths 6-6-90-6 (199.83M params; ImageNet-22k pre-training only)."""
    return _create_van('van_b6', pretrained, **_arch((96, 192, 384, 768), (6, 6, 90, 6), **kwargs))
