"""Feature pyramid necks with mmdet 3.x semantics: FPN and PAFPN.

Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017 (arXiv:1612.03144);
Liu et al., "Path Aggregation Network for Instance Segmentation", CVPR 2018 (arXiv:1803.01534).

Module and parameter names follow mmdet's necks built from mmcv's ``ConvModule`` (``lateral_convs.{i}.conv``,
``fpn_convs.{i}.conv``, a norm as ``.bn`` / ``.gn``), so the ``neck.`` part of an mmdet detector checkpoint loads
with ``load_state_dict(strict=True)`` and no key conversion.
"""
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.conv_norm_act import ConvNormAct
from ..layers.norm_act import ActCfg, NormCfg
from ..registry import MODELS
from ..utils.errors import ArgumentError

__all__ = ['xavier_init', 'ConvNormAct', 'FPNBase', 'FPN', 'PAFPN']

_EXTRA_SOURCES = ('on_input', 'on_lateral', 'on_output')
_UPSAMPLE_MODES = ('nearest', 'nearest-exact', 'bilinear', 'bicubic')


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Conv2d in ``module`` (mmdet's init of its necks)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class FPNBase(nn.Module):
    """What FPN, PAFPN and EfficientViTFPN share: argument checks, lateral and 3x3 output convs, the top-down
    pass and the extra coarse levels (mmdet 3.x ``FPN``).

    ``num_fine_levels`` outputs finer than the first used input are made by a subclass; they count in ``num_outs``.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, start_level: int = 0,
                 end_level: int = -1, add_extra_convs: Union[bool, str] = False, relu_before_extra_convs: bool = False,
                 no_norm_on_lateral: bool = False, norm: NormCfg = None, act: ActCfg = None,
                 upsample_mode: str = 'nearest', num_fine_levels: int = 0):
        super().__init__()
        name = type(self).__name__
        if (not isinstance(in_channels, (list, tuple)) or not in_channels
                or not all(isinstance(c, int) and c > 0 for c in in_channels)):
            raise ArgumentError(f'{name}(in_channels={in_channels!r}): expected a non-empty list of positive ints '
                                f'(the channels of each input map)')
        if not isinstance(out_channels, int) or out_channels < 1:
            raise ArgumentError(f'{name}(out_channels={out_channels!r}): expected a positive int')
        num_ins = len(in_channels)
        if not isinstance(start_level, int) or not 0 <= start_level < num_ins:
            raise ArgumentError(f'{name}(start_level={start_level!r}): expected an input index from 0 to '
                                f'{num_ins - 1}')
        if end_level in (-1, num_ins - 1):
            self.backbone_end_level = num_ins
        elif isinstance(end_level, int) and start_level <= end_level < num_ins:
            self.backbone_end_level = end_level + 1  # inclusive, as mmdet 3.x
        else:
            raise ArgumentError(f'{name}(end_level={end_level!r}): expected -1 (the last input) or an input index '
                                f'from start_level={start_level} to {num_ins - 1} (inclusive)')
        used = self.backbone_end_level - start_level
        if not isinstance(num_outs, int):
            raise ArgumentError(f'{name}(num_outs={num_outs!r}): expected an int')
        fine = f' plus {num_fine_levels} finer levels' if num_fine_levels else ''
        if self.backbone_end_level < num_ins and num_outs != used + num_fine_levels:
            raise ArgumentError(f'{name}(num_outs={num_outs}): end_level={end_level} is not the last input, so no '
                                f'extra level is possible: expected {used + num_fine_levels} ({used} inputs{fine})')
        if num_outs < used + num_fine_levels:
            raise ArgumentError(f'{name}(num_outs={num_outs}): expected at least {used + num_fine_levels} (inputs '
                                f'{start_level}..{self.backbone_end_level - 1}{fine})')
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs is not False and add_extra_convs not in _EXTRA_SOURCES:
            raise ArgumentError(f'{name}(add_extra_convs={add_extra_convs!r}): expected False, True (= on_input) or '
                                f'one of {_EXTRA_SOURCES}')
        if upsample_mode not in _UPSAMPLE_MODES:
            raise ArgumentError(f'{name}(upsample_mode={upsample_mode!r}): expected one of {_UPSAMPLE_MODES}')
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_mode = upsample_mode
        self.norm = norm
        self.act = act
        self.lateral_convs = nn.ModuleList(self._conv(c, 1, with_norm=not no_norm_on_lateral)
                                           for c in self.in_channels[start_level:self.backbone_end_level])
        self.fpn_convs = nn.ModuleList(self._conv(out_channels, 3) for _ in range(used))
        # extra coarse levels: stride-2 3x3 convs after the level convs in fpn_convs, or (without) max pooling
        self.num_coarse_levels = num_outs - used - num_fine_levels
        if add_extra_convs:
            first_in = self.in_channels[self.backbone_end_level - 1] if add_extra_convs == 'on_input' else out_channels
            self.fpn_convs.extend(self._conv(first_in if i == 0 else out_channels, 3, stride=2)
                                  for i in range(self.num_coarse_levels))
        xavier_init(self)

    def _conv(self, in_channels: int, kernel_size: int, stride: int = 1, with_norm: bool = True,
              transposed: bool = False) -> ConvNormAct:
        """A conv to ``out_channels`` with the neck's norm and activation ('same' padding unless transposed)."""
        return ConvNormAct(in_channels, self.out_channels, kernel_size, stride=stride,
                           padding=0 if transposed else kernel_size // 2, norm=self.norm if with_norm else None,
                           act=self.act, transposed=transposed, owner=type(self).__name__)

    def _check_inputs(self, inputs: Sequence[torch.Tensor]) -> None:
        name = type(self).__name__
        if len(inputs) != len(self.in_channels):
            raise ArgumentError(f'{name}(in_channels={self.in_channels}): built for {len(self.in_channels)} input '
                                f'maps, got {len(inputs)} maps')
        channels = [x.shape[1] if x.dim() == 4 else None for x in inputs]
        if channels != self.in_channels:
            raise ArgumentError(f'{name}(in_channels={self.in_channels}): expected NCHW maps with these channels, '
                                f'got maps of shapes {[tuple(x.shape) for x in inputs]}')

    def _upsample(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.upsample_mode in ('bilinear', 'bicubic'):
            return F.interpolate(x, size=size, mode=self.upsample_mode, align_corners=False)
        return F.interpolate(x, size=size, mode=self.upsample_mode)

    def _top_down(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Lateral 1x1 convs, then each coarser level upsampled to the next finer one's size and added."""
        self._check_inputs(inputs)
        laterals = [conv(inputs[self.start_level + i]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._upsample(laterals[i], laterals[i - 1].shape[-2:])
        return laterals

    def _add_coarse_levels(self, inputs: Sequence[torch.Tensor], laterals: List[torch.Tensor],
                           outs: List[torch.Tensor]) -> None:
        """Append the extra levels: max pooling (kernel 1, stride 2) of the last output, or stride-2 convs whose
        first input is chosen by ``add_extra_convs`` and the next ones take the previous extra level."""
        if not self.add_extra_convs:
            for _ in range(self.num_coarse_levels):
                outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
            return
        extra_convs = self.fpn_convs[len(laterals):]
        for i, conv in enumerate(extra_convs):
            if i > 0:
                x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
            elif self.add_extra_convs == 'on_input':
                x = inputs[self.backbone_end_level - 1]
            elif self.add_extra_convs == 'on_lateral':
                x = laterals[-1]
            else:
                x = outs[-1]
            outs.append(conv(x))


@MODELS.register_module()
class FPN(FPNBase):
    """Feature Pyramid Network (mmdet 3.x ``FPN``): a tuple of ``num_outs`` maps with ``out_channels`` channels.

    Inputs ``start_level..end_level`` get a 1x1 lateral conv; from the coarsest down, each level is upsampled to the
    size of the next finer one (so odd sizes work) and added to it; a 3x3 conv makes each output. Levels beyond
    the inputs come from max pooling (kernel 1, stride 2) of the last output or, with ``add_extra_convs``, from
    stride-2 3x3 convs.

    Parameter names are those of mmdet's FPN (``lateral_convs.{i}.conv``, ``fpn_convs.{i}.conv``, norms as
    ``.bn``/``.gn``; extra convs follow the level convs in ``fpn_convs``) so that mmdet detector checkpoints, and
    checkpoints of papers that trained with mmdet, load without a key map.

    Args:
        in_channels: channels of each input map (finest first).
        out_channels: channels of every output.
        num_outs: number of outputs; at least the number of used inputs, exactly that when end_level is not last.
        start_level: first input used.
        end_level: last input used, inclusive (mmdet 3.x); -1: the last input.
        add_extra_convs: False (extra levels by max pooling), or the source of the first stride-2 conv:
            ``'on_input'`` (the last used input; also True), ``'on_lateral'`` (its lateral) or ``'on_output'``
            (the last output).
        relu_before_extra_convs: ReLU before every extra conv after the first.
        no_norm_on_lateral: no norm (and a bias) on the lateral convs.
        norm: None (convs with bias), ``'BN'``, ``'SyncBN'``, ``'GN'`` (32 groups), ``'LN'`` or a dict with
            ``type`` and options, e.g. ``dict(type='GN', num_groups=16)``.
        act: None, ``'ReLU'``, ``'SiLU'``, ... or a dict with ``type``; after every conv and norm.
        upsample_mode: ``F.interpolate`` mode of the top-down path.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, start_level: int = 0,
                 end_level: int = -1, add_extra_convs: Union[bool, str] = False, relu_before_extra_convs: bool = False,
                 no_norm_on_lateral: bool = False, norm: NormCfg = None, act: ActCfg = None,
                 upsample_mode: str = 'nearest'):
        super().__init__(in_channels, out_channels, num_outs, start_level=start_level, end_level=end_level,
                         add_extra_convs=add_extra_convs, relu_before_extra_convs=relu_before_extra_convs,
                         no_norm_on_lateral=no_norm_on_lateral, norm=norm, act=act, upsample_mode=upsample_mode)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        laterals = self._top_down(inputs)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        self._add_coarse_levels(inputs, laterals, outs)
        return tuple(outs)


@MODELS.register_module()
class PAFPN(FPN):
    """Path Aggregation FPN (mmdet 3.x ``PAFPN``): FPN, then a bottom-up path.

    After the FPN's 3x3 convs, each level from the finest up gets the previous one through a stride-2 3x3 conv
    (``downsample_convs``) added, and every level but the finest another 3x3 conv (``pafpn_convs``). The
    downsampled map must have the next level's size, as when each input halves its finer neighbour rounding up.
    Arguments, extra levels and checkpoint names as :class:`FPN`.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, start_level: int = 0,
                 end_level: int = -1, add_extra_convs: Union[bool, str] = False, relu_before_extra_convs: bool = False,
                 no_norm_on_lateral: bool = False, norm: NormCfg = None, act: ActCfg = None,
                 upsample_mode: str = 'nearest'):
        super().__init__(in_channels, out_channels, num_outs, start_level=start_level, end_level=end_level,
                         add_extra_convs=add_extra_convs, relu_before_extra_convs=relu_before_extra_convs,
                         no_norm_on_lateral=no_norm_on_lateral, norm=norm, act=act, upsample_mode=upsample_mode)
        steps = len(self.lateral_convs) - 1
        self.downsample_convs = nn.ModuleList(self._conv(out_channels, 3, stride=2) for _ in range(steps))
        self.pafpn_convs = nn.ModuleList(self._conv(out_channels, 3) for _ in range(steps))
        xavier_init(self.downsample_convs)
        xavier_init(self.pafpn_convs)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        laterals = self._top_down(inputs)
        inter = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        for i, down in enumerate(self.downsample_convs):
            below = down(inter[i])
            if below.shape[-2:] != inter[i + 1].shape[-2:]:
                raise ValueError(f'PAFPN: level {i} of size {tuple(inter[i].shape[-2:])} downsamples to '
                                 f'{tuple(below.shape[-2:])}, but level {i + 1} has size '
                                 f'{tuple(inter[i + 1].shape[-2:])}; each input map must halve its finer '
                                 f'neighbour, rounding up')
            inter[i + 1] = inter[i + 1] + below
        outs = inter[:1] + [conv(x) for conv, x in zip(self.pafpn_convs, inter[1:])]
        self._add_coarse_levels(inputs, laterals, outs)
        return tuple(outs)
