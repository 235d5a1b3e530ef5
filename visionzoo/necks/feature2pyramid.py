"""mmseg's ``Feature2Pyramid``: one plain (single-stride) backbone map per output level, rescaled to a pyramid.

The neck BEiT and Vim's segmentation code put behind a plain backbone: four maps at stride 16 (from four blocks)
become strides 4/8/16/32 with ``rescales=(4, 2, 1, 0.5)``: x4 = transposed conv, norm, GELU, transposed conv; x2 =
transposed conv; x1 = identity; x0.5 / x0.25 = max pooling. Module names are mmseg 1.x's (``upsample_4x.{0,1,3}``,
``upsample_2x.0``), so mmseg checkpoints load as they are; official Vim/BEiT checkpoints keep the same layers in their
backbone as ``fpn1``/``fpn2`` (:mod:`visionzoo.models.seg_checkpoint` moves them).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.norm_act import NormCfg, build_norm
from ..registry import MODELS
from ..utils.options import argument_error, positive_int

__all__ = ['Feature2Pyramid']

_RESCALES = (4, 2, 1, 0.5, 0.25)


@MODELS.register_module()
class Feature2Pyramid(nn.Module):
    """mmseg 1.x's ``Feature2Pyramid(embed_dim, rescales=(4, 2, 1, 0.5), norm_cfg=SyncBN)``.

    Args:
        embed_dim: channels of every input map (kept by every level).
        rescales: one factor per input, in order; either ``(4, 2, 1, 0.5)`` or ``(2, 1, 0.5, 0.25)`` or a prefix
            of one of them (mmseg applies x4, x2, x1, x0.5 when 4 is present, else x2, x1, x0.5, x0.25).
        norm_cfg: the norm inside the x4 branch (``'SyncBN'`` builds BatchNorm-compatible weights either way).
        in_channels: the backbone's channels per input (filled in by the segmentor); each must be ``embed_dim``.
    """

    def __init__(self, embed_dim: int, rescales: Sequence[float] = (4, 2, 1, 0.5),
                 norm_cfg: NormCfg = dict(type='SyncBN', requires_grad=True),
                 in_channels: Optional[Sequence[int]] = None):
        super().__init__()
        name = type(self).__name__
        positive_int(name, 'embed_dim', embed_dim)
        if in_channels is not None and any(c != embed_dim for c in in_channels):
            raise argument_error(name, 'in_channels', list(in_channels),
                                 f'every input must have embed_dim={embed_dim} channels')
        rescales = list(rescales) if isinstance(rescales, (list, tuple)) else rescales
        order = [4, 2, 1, 0.5] if isinstance(rescales, list) and 4 in rescales else [2, 1, 0.5, 0.25]
        if not isinstance(rescales, list) or not rescales or rescales != order[:len(rescales)]:
            raise argument_error(name, 'rescales', rescales,
                                 'expected a prefix of (4, 2, 1, 0.5) or of (2, 1, 0.5, 0.25), one factor per input')
        self.rescales = rescales
        c = embed_dim
        self.upsample_4x = None
        if 4 in rescales:
            self.upsample_4x = nn.Sequential(nn.ConvTranspose2d(c, c, 2, 2),
                                             build_norm(norm_cfg, c, owner=name, arg='norm_cfg'), nn.GELU(),
                                             nn.ConvTranspose2d(c, c, 2, 2))
        if 2 in rescales:
            self.upsample_2x = nn.Sequential(nn.ConvTranspose2d(c, c, 2, 2))
        if 1 in rescales:
            self.identity = nn.Identity()
        if 0.5 in rescales:
            self.downsample_2x = nn.MaxPool2d(2, 2)
        if 0.25 in rescales:
            self.downsample_4x = nn.MaxPool2d(4, 4)
        branch = {4: 'upsample_4x', 2: 'upsample_2x', 1: 'identity', 0.5: 'downsample_2x', 0.25: 'downsample_4x'}
        self._branches = [branch[r] for r in rescales]

    def forward(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(inputs) != len(self.rescales):
            raise ValueError(f'Feature2Pyramid: expected {len(self.rescales)} input maps (one per rescale factor '
                             f'{self.rescales}), got {len(inputs)}')
        return [getattr(self, b)(x) for b, x in zip(self._branches, inputs)]
