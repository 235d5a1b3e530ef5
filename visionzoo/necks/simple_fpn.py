"""ViTDet's simple feature pyramid: multi-scale maps from a single-scale (plain ViT / Vim) backbone.

Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection", ECCV 2022 (arXiv:2203.16527).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.norm_act import NormCfg, build_norm
from ..registry import MODELS
from ..utils.errors import ArgumentError

__all__ = ['SimpleFeaturePyramid']

_SCALES = (4.0, 2.0, 1.0, 0.5)


_NORMS = ('LN', 'BN', 'SyncBN')


def _norm(cfg: NormCfg, channels: int) -> nn.Module:
    layer = build_norm(cfg, channels, owner='SimpleFeaturePyramid', arg='norm', allowed=_NORMS)
    return nn.Identity() if layer is None else layer


def _rescale(scale: float, channels: int, norm: NormCfg) -> Tuple[nn.Module, int]:
    """Up-/down-sampling of one pyramid level (ViTDet): 2x2 transposed convs up, 2x2 max pooling down."""
    if scale == 4.0:
        return nn.Sequential(nn.ConvTranspose2d(channels, channels // 2, 2, stride=2), _norm(norm, channels // 2),
                             nn.GELU(), nn.ConvTranspose2d(channels // 2, channels // 4, 2, stride=2)), channels // 4
    if scale == 2.0:
        return nn.ConvTranspose2d(channels, channels // 2, 2, stride=2), channels // 2
    if scale == 1.0:
        return nn.Identity(), channels
    if scale == 0.5:
        return nn.MaxPool2d(2, stride=2), channels
    raise ArgumentError(f'SimpleFeaturePyramid(scale_factors=[..., {scale!r}, ...]): each must be one of {_SCALES}')


@MODELS.register_module()
class SimpleFeaturePyramid(nn.Module):
    """Pyramid levels by rescaling single-scale maps, then a 1x1 and a 3x3 conv (each with a norm) per level.

    Two input modes:

    * one map (ViTDet): every level is made from it;
    * one map per level (BEiT / the official Vim segmentation code): map i makes level i.

    Args:
        in_channels: channels of the backbone map(s).
        out_channels: channels of every output level.
        scale_factors: resampling per level relative to the input (4: stride 16 -> 4, 0.5: 16 -> 32).
        norm: ``'LN'`` (ViTDet), ``'BN'``, ``'SyncBN'``, a dict with ``type`` and options (e.g.
            ``dict(type='LN', eps=1e-5)``; see :mod:`visionzoo.layers.norm_act`) or None (then the convs have a
            bias).
        num_outs: total outputs; levels beyond ``len(scale_factors)`` come from max pooling (kernel 1,
            stride 2) of the last one, as ViTDet's top block (P6 for Mask R-CNN / RetinaNet).
    """

    def __init__(self, in_channels: Union[int, Sequence[int]], out_channels: int = 256,
                 scale_factors: Sequence[float] = _SCALES, norm: NormCfg = 'LN',
                 num_outs: Optional[int] = None):
        super().__init__()
        channels = in_channels if isinstance(in_channels, int) else list(in_channels)
        if not isinstance(channels, int) and len(set(channels)) != 1:
            raise ArgumentError(f'SimpleFeaturePyramid(in_channels={channels}): the inputs of a simple feature '
                                f'pyramid share one width')
        channels = channels if isinstance(channels, int) else channels[0]
        if not isinstance(scale_factors, (list, tuple)) or not scale_factors or any(
                isinstance(s, bool) or not isinstance(s, (int, float)) or s not in _SCALES for s in scale_factors):
            raise ArgumentError(f'SimpleFeaturePyramid(scale_factors={scale_factors!r}): expected a non-empty list '
                                f'of values from {_SCALES}')
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.num_levels = len(scale_factors)
        self.num_outs = self.num_levels if num_outs is None else int(num_outs)
        if self.num_outs < self.num_levels:
            raise ArgumentError(f'SimpleFeaturePyramid(num_outs={num_outs!r}): expected at least '
                                f'len(scale_factors)={self.num_levels}')
        self.rescale = nn.ModuleList()
        self.lateral = nn.ModuleList()
        self.output = nn.ModuleList()
        for scale in scale_factors:
            op, width = _rescale(float(scale), channels, norm)
            self.rescale.append(op)
            self.lateral.append(nn.Sequential(nn.Conv2d(width, out_channels, 1, bias=norm is None),
                                              _norm(norm, out_channels)))
            self.output.append(nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=norm is None),
                                             _norm(norm, out_channels)))

    def forward(self, inputs: Union[torch.Tensor, Sequence[torch.Tensor]]) -> List[torch.Tensor]:
        inputs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        if len(inputs) == 1:
            inputs = inputs * self.num_levels
        elif len(inputs) != self.num_levels:
            raise ArgumentError(f'SimpleFeaturePyramid(scale_factors={self.scale_factors}): takes one map or '
                                f'{self.num_levels} maps (one per level), got {len(inputs)}')
        outs = [out(lat(op(x))) for x, op, lat, out in zip(inputs, self.rescale, self.lateral, self.output)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return outs
