"""ViTDet's simple feature pyramid: multi-scale maps from a single-scale (plain ViT / Vim) backbone.

Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection", ECCV 2022 (arXiv:2203.16527).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from ..registry import MODELS

__all__ = ['SimpleFeaturePyramid']

_SCALES = (4.0, 2.0, 1.0, 0.5)


def _norm(kind: Optional[str], channels: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == 'LN':
        return LayerNorm2d(channels)
    if kind == 'BN':
        return nn.BatchNorm2d(channels)
    if kind == 'SyncBN':
        return nn.SyncBatchNorm(channels)
    raise ValueError(f"norm must be 'LN', 'BN', 'SyncBN' or None, got {kind!r}")


def _rescale(scale: float, channels: int, norm: Optional[str]) -> Tuple[nn.Module, int]:
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
    raise ValueError(f'scale_factors: each must be one of {_SCALES}, got {scale}')


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
        norm: ``'LN'`` (ViTDet), ``'BN'``, ``'SyncBN'`` or None (then the convs have a bias).
        num_outs: total outputs; levels beyond ``len(scale_factors)`` come from max pooling (kernel 1,
            stride 2) of the last one, as ViTDet's top block (P6 for Mask R-CNN / RetinaNet).
    """

    def __init__(self, in_channels: Union[int, Sequence[int]], out_channels: int = 256,
                 scale_factors: Sequence[float] = _SCALES, norm: Optional[str] = 'LN',
                 num_outs: Optional[int] = None):
        super().__init__()
        channels = in_channels if isinstance(in_channels, int) else list(in_channels)
        if not isinstance(channels, int) and len(set(channels)) != 1:
            raise ValueError(f'in_channels: the inputs of a simple feature pyramid share one width, got {channels}')
        channels = channels if isinstance(channels, int) else channels[0]
        self.num_levels = len(scale_factors)
        self.num_outs = self.num_levels if num_outs is None else int(num_outs)
        if self.num_outs < self.num_levels:
            raise ValueError(f'num_outs must be at least len(scale_factors)={self.num_levels}, got {num_outs}')
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
            raise ValueError(f'SimpleFeaturePyramid takes one map or {self.num_levels} maps (one per level), '
                             f'got {len(inputs)}')
        outs = [out(lat(op(x))) for x, op, lat, out in zip(inputs, self.rescale, self.lateral, self.output)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return outs
