"""The detection neck of EfficientViT (MSRA) and SHViT: an FPN that also makes stride-8 and stride-4 levels.

Liu et al., "EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention", CVPR 2023
(arXiv:2305.07027), neck of microsoft/Cream EfficientViT/downstream; SHViT (Yun & Ro, CVPR 2024) uses the same
neck. Their backbones end at strides 16/32/64, so the levels a detector needs at strides 4 and 8 are synthesised
by 2x2 stride-2 transposed convs from the stride-16 lateral.
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..registry import MODELS
from ..layers.norm_act import ActCfg, NormCfg
from ..utils.errors import ArgumentError
from .fpn import FPNBase, xavier_init

__all__ = ['EfficientViTFPN']


@MODELS.register_module()
class EfficientViTFPN(FPNBase):
    """FPN over the inputs plus ``num_extra_trans_convs`` finer levels, finest first.

    After the FPN top-down pass, the first used lateral goes through a chain of 2x2 stride-2 transposed convs
    (``extra_trans_convs``, each with the norm unless ``no_norm_on_lateral``); each result gets its own 3x3 conv
    (``extra_fpn_convs``; index 0 makes the finest level). The outputs are the transposed-conv levels, finest first,
    then the FPN levels and extra coarse levels exactly as :class:`FPN` (``num_outs`` counts all of them).

    With EfficientViT-M / SHViT (strides 16/32/64): ``num_extra_trans_convs=2, num_outs=5`` gives strides 4..64
    (the official Mask R-CNN configs); ``num_extra_trans_convs=1, num_outs=5, add_extra_convs='on_input'`` gives
    strides 8..128 (the official RetinaNet configs).

    Checkpoints: module and parameter names are the official ones (``lateral_convs``, ``fpn_convs``,
    ``extra_trans_convs``, ``extra_fpn_convs``, each ``.conv`` plus ``.bn``/``.gn`` with a norm), so the ``neck.``
    keys of the official EfficientViT/SHViT detection checkpoints load unchanged. Differences from the official
    module: ``end_level`` is inclusive as in mmdet 3.x (the official mmdet 2.x code takes it exclusive; the official
    configs leave it at -1, where both agree), ``num_extra_trans_convs=0`` works (a plain FPN), and the deprecated
    ``extra_convs_on_inputs`` is gone (``add_extra_convs=True`` means ``'on_input'``, the official default).
    Initialisation as the official code: Xavier-uniform Conv2d weights, Kaiming-normal (fan-out) transposed convs,
    zero biases.

    Args:
        num_extra_trans_convs: number of transposed-conv levels finer than the first used input.
        Others: as :class:`visionzoo.necks.FPN`.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, start_level: int = 0,
                 end_level: int = -1, add_extra_convs: Union[bool, str] = False, num_extra_trans_convs: int = 2,
                 relu_before_extra_convs: bool = False, no_norm_on_lateral: bool = False, norm: NormCfg = None,
                 act: ActCfg = None, upsample_mode: str = 'nearest'):
        if isinstance(num_extra_trans_convs, bool) or not isinstance(num_extra_trans_convs, int) \
                or num_extra_trans_convs < 0:
            raise ArgumentError(f'EfficientViTFPN(num_extra_trans_convs={num_extra_trans_convs!r}): expected an '
                                f'int >= 0')
        super().__init__(in_channels, out_channels, num_outs, start_level=start_level, end_level=end_level,
                         add_extra_convs=add_extra_convs, relu_before_extra_convs=relu_before_extra_convs,
                         no_norm_on_lateral=no_norm_on_lateral, norm=norm, act=act, upsample_mode=upsample_mode,
                         num_fine_levels=num_extra_trans_convs)
        self.extra_trans_convs = nn.ModuleList(
            self._conv(out_channels, 2, stride=2, with_norm=not no_norm_on_lateral, transposed=True)
            for _ in range(num_extra_trans_convs))
        self.extra_fpn_convs = nn.ModuleList(self._conv(out_channels, 3) for _ in range(num_extra_trans_convs))
        for m in self.extra_trans_convs:
            nn.init.kaiming_normal_(m.conv.weight, mode='fan_out', nonlinearity='relu')
            if m.conv.bias is not None:
                nn.init.zeros_(m.conv.bias)
        xavier_init(self.extra_fpn_convs)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        laterals = self._top_down(inputs)
        fine = []
        x = laterals[0]
        for up in self.extra_trans_convs:
            x = up(x)
            fine.insert(0, x)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        self._add_coarse_levels(inputs, laterals, outs)
        return tuple([conv(x) for conv, x in zip(self.extra_fpn_convs, fine)] + outs)
