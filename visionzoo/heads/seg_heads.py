"""Decode heads of semantic segmentation with mmseg 1.x semantics, arguments and parameter names.

Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017 (arXiv:1612.01105) for the pooling pyramid;
Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018 (arXiv:1807.10221): :class:`UPerHead`;
Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019 (arXiv:1901.02446): :class:`FPNHead`;
Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015: :class:`FCNHead`.

Module names follow mmseg's heads built from mmcv's ``ConvModule`` (``conv_seg``, ``psp_modules.{i}.1.conv``,
``bottleneck.bn``, ``lateral_convs.{i}.conv``, ``scale_heads.{i}.{j}.conv``, ``convs.{i}.conv``, ``conv_cat``...;
a norm as ``.bn`` for BN/SyncBN and ``.gn`` for GN), so the ``decode_head.`` / ``auxiliary_head.`` part of an mmseg
segmentor checkpoint loads with ``load_state_dict(strict=True)`` and no key conversion. The losses in
``loss_decode`` hold no state.

What a segmentor calls: ``forward(inputs)`` (logits at the head's resolution), ``loss_by_feat(seg_logits,
seg_label)`` and ``predict_by_feat(seg_logits, size)``.
"""
import math
from collections.abc import Mapping
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.norm_act import ActCfg, NormCfg, build_act, build_norm
from ..layers.conv_norm_act import ConvNormAct
from ..registry import MODELS
from ..utils.errors import ArgumentError
from ..utils.options import argument_error, positive_int
from .losses import seg_accuracy

__all__ = ['BaseDecodeHead', 'PPM', 'UPerHead', 'FPNHead', 'FCNHead']

_INPUT_TRANSFORMS = (None, 'resize_concat', 'multiple_select')
_CE = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)


def _resize(x: torch.Tensor, size, align_corners: bool) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=align_corners)


def _conv_module(in_channels: int, out_channels: int, kernel_size: int, norm: NormCfg, act: ActCfg, owner: str,
                 padding: int = 0, dilation: int = 1) -> ConvNormAct:
    """mmcv's ``ConvModule(conv, norm, act)`` of the heads: the conv has a bias only without a norm."""
    return ConvNormAct(in_channels, out_channels, kernel_size, padding=padding, norm=norm, act=act, owner=owner,
                       dilation=dilation)


class _Upsample(nn.Module):
    """mmseg's ``Upsample(scale_factor=2)`` of the FPN head: a bilinear resize to ``int(2 * size)``; no state."""

    def __init__(self, align_corners: bool):
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize(x, [int(t * 2.0) for t in x.shape[-2:]], self.align_corners)


class BaseDecodeHead(nn.Module):
    """What the decode heads share (mmseg 1.x ``BaseDecodeHead``): input selection, the dropout and 1x1 classifier
    ``conv_seg``, the losses and the resize of logits to the label or image size.

    Args:
        in_channels: channels of the selected input (an int) or of each selected input (a list, with
            ``input_transform``).
        channels: channels of the head's last feature map, before ``conv_seg``.
        num_classes: number of classes (the channels of the logits).
        dropout_ratio: ``nn.Dropout2d`` probability before ``conv_seg`` (0: none).
        norm_cfg: None (convs with bias) or ``dict(type='BN' | 'SyncBN' | 'GN', requires_grad=True, ...)``; GN takes
            ``num_groups``.
        act_cfg: activation after each conv (``dict(type='ReLU')``), or None.
        in_index: index of the input map used (an int, may be negative) or of each input map used (a list).
        input_transform: None (one map), ``'multiple_select'`` (the list of the selected maps) or
            ``'resize_concat'`` (the selected maps resized bilinearly to the first one's size and concatenated).
        loss_decode: a loss config or a list of them, built from the MODELS registry; the losses of the same
            ``loss_name`` are summed.
        ignore_index: label of the pixels without a class (padding, unlabelled).
        align_corners: ``align_corners`` of every bilinear resize.
        out_channels, threshold, sampler: mmseg's binary-segmentation and pixel-sampler options; only their
            defaults (None) are supported. ``conv_cfg`` (None or a plain Conv2d) and ``init_cfg`` are accepted and
            ignored: the weights are initialised as mmseg's ``init_weights`` does.
    """

    def __init__(self, in_channels: Union[int, Sequence[int]], channels: int, *, num_classes: int,
                 out_channels: Optional[int] = None, threshold: Optional[float] = None, dropout_ratio: float = 0.1,
                 conv_cfg: Optional[dict] = None, norm_cfg: NormCfg = None, act_cfg: ActCfg = dict(type='ReLU'),
                 in_index: Union[int, Sequence[int]] = -1, input_transform: Optional[str] = None,
                 loss_decode: Union[dict, Sequence[dict]] = _CE, ignore_index: int = 255, sampler=None,
                 align_corners: bool = False, init_cfg=None):
        super().__init__()
        name = type(self).__name__
        self.channels = positive_int(name, 'channels', channels)
        self.num_classes = positive_int(name, 'num_classes', num_classes)
        if out_channels is not None and out_channels != num_classes:
            raise argument_error(name, 'out_channels', out_channels,
                                 f'expected None or num_classes={num_classes} (binary segmentation with one output '
                                 f'channel is not supported)')
        if threshold is not None:
            raise argument_error(name, 'threshold', threshold, 'expected None (binary segmentation is not supported)')
        if sampler is not None:
            raise argument_error(name, 'sampler', sampler, 'expected None (pixel samplers are not supported)')
        if conv_cfg is not None and not (isinstance(conv_cfg, Mapping) and dict(conv_cfg) in (
                dict(type='Conv2d'), dict(type='Conv'))):
            raise argument_error(name, 'conv_cfg', conv_cfg, "expected None or dict(type='Conv2d') (plain convs)")
        if isinstance(dropout_ratio, bool) or not isinstance(dropout_ratio, (int, float)) \
                or not 0 <= dropout_ratio < 1:
            raise argument_error(name, 'dropout_ratio', dropout_ratio, 'expected a number in [0, 1)')
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise argument_error(name, 'ignore_index', ignore_index, 'expected an int (255: no class)')
        if not isinstance(align_corners, bool):
            raise argument_error(name, 'align_corners', align_corners, 'expected True or False')
        build_norm(norm_cfg, self.channels, owner=name, arg='norm_cfg')  # checked once, with the argument's name
        build_act(act_cfg, owner=name, arg='act_cfg')
        self._init_inputs(in_channels, in_index, input_transform)
        self.dropout_ratio = dropout_ratio
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        self.out_channels = self.num_classes
        self.loss_decode = self._build_losses(loss_decode)
        self.conv_seg = nn.Conv2d(self.channels, self.num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None

    def _init_inputs(self, in_channels, in_index, input_transform) -> None:
        name = type(self).__name__
        if input_transform not in _INPUT_TRANSFORMS:
            raise argument_error(name, 'input_transform', input_transform, f'expected one of {_INPUT_TRANSFORMS}')
        self.input_transform = input_transform
        if input_transform is None:
            positive_int(name, 'in_channels', in_channels)
            if isinstance(in_index, bool) or not isinstance(in_index, int):
                raise argument_error(name, 'in_index', in_index,
                                     'expected an int (the index of the input map) when input_transform is None')
            self.in_channels = in_channels
        else:
            if (not isinstance(in_channels, (list, tuple)) or not in_channels
                    or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in in_channels)):
                raise argument_error(name, 'in_channels', in_channels,
                                     f'expected a non-empty list of positive ints with '
                                     f'input_transform={input_transform!r}')
            if (not isinstance(in_index, (list, tuple))
                    or any(isinstance(i, bool) or not isinstance(i, int) for i in in_index)):
                raise argument_error(name, 'in_index', in_index,
                                     f'expected a list of ints with input_transform={input_transform!r}')
            if len(in_index) != len(in_channels):
                raise argument_error(name, 'in_index', in_index,
                                     f'expected one index per entry of in_channels={list(in_channels)} '
                                     f'({len(in_channels)}), got {len(in_index)}')
            in_index = list(in_index)
            self.in_channels = sum(in_channels) if input_transform == 'resize_concat' else list(in_channels)
        self.in_index = in_index
        self._selected_channels = [in_channels] if input_transform is None else list(in_channels)

    def _build_losses(self, loss_decode) -> nn.Module:
        name = type(self).__name__
        if isinstance(loss_decode, (Mapping, nn.Module)):
            listed, single = [loss_decode], True
        elif isinstance(loss_decode, (list, tuple)) and loss_decode:
            listed, single = list(loss_decode), False
        else:
            raise argument_error(name, 'loss_decode', loss_decode, 'expected a loss config dict or a list of them')
        losses = []
        for cfg in listed:
            loss = cfg if isinstance(cfg, nn.Module) else MODELS.build(dict(cfg)) if isinstance(cfg, Mapping) \
                else None
            if loss is None or not isinstance(getattr(loss, 'loss_name', None), str):
                raise argument_error(name, 'loss_decode', loss_decode,
                                     'expected loss config dicts of losses with a loss_name')
            losses.append(loss)
        return losses[0] if single else nn.ModuleList(losses)

    def init_weights(self) -> None:
        """mmseg's initialisation: every ``ConvModule`` conv Kaiming-normal (fan_out, ReLU gain; leaky ReLU's with a
        LeakyReLU activation) with zero bias, norms at 1 and 0, ``conv_seg`` normal with std 0.01 and zero bias."""
        for m in self.modules():
            if isinstance(m, ConvNormAct):
                if isinstance(m.activate, nn.LeakyReLU):
                    nn.init.kaiming_normal_(m.conv.weight, a=m.activate.negative_slope, mode='fan_out',
                                            nonlinearity='leaky_relu')
                else:
                    nn.init.kaiming_normal_(m.conv.weight, a=0, mode='fan_out', nonlinearity='relu')
                if m.conv.bias is not None:
                    nn.init.zeros_(m.conv.bias)
                if m.norm_name is not None:
                    norm = getattr(m, m.norm_name)
                    if getattr(norm, 'weight', None) is not None:
                        nn.init.ones_(norm.weight)
                        nn.init.zeros_(norm.bias)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def _conv(self, in_channels: int, kernel_size: int, padding: int = 0, dilation: int = 1) -> ConvNormAct:
        """A conv to ``channels`` with the head's norm and activation."""
        return _conv_module(in_channels, self.channels, kernel_size, self.norm_cfg, self.act_cfg,
                            type(self).__name__, padding=padding, dilation=dilation)

    def _transform_inputs(self, inputs: Sequence[torch.Tensor]):
        """The input map (or list of maps, or their resized concatenation) ``in_index`` and ``input_transform``
        select from the backbone's / neck's maps."""
        name = type(self).__name__
        if not isinstance(inputs, (list, tuple)) or not all(isinstance(x, torch.Tensor) for x in inputs):
            raise TypeError(f'{name}: expected a list or tuple of NCHW tensors, got {type(inputs).__name__}')
        indices = [self.in_index] if self.input_transform is None else self.in_index
        if any(not -len(inputs) <= i < len(inputs) for i in indices):
            raise argument_error(name, 'in_index', self.in_index,
                                 f'expected indices into the {len(inputs)} input maps')
        selected = [inputs[i] for i in indices]
        channels = [x.shape[1] if x.dim() == 4 else None for x in selected]
        if channels != self._selected_channels:
            given = self.in_channels if self.input_transform is None else self._selected_channels
            raise ArgumentError(f'{name}(in_channels={given}): expected NCHW maps with these channels at '
                                f'in_index={self.in_index}, got maps of shapes {[tuple(x.shape) for x in selected]}')
        if self.input_transform is None:
            return selected[0]
        if self.input_transform == 'multiple_select':
            return selected
        size = selected[0].shape[2:]
        return torch.cat([_resize(x, size, self.align_corners) for x in selected], dim=1)

    def cls_seg(self, feat: torch.Tensor) -> torch.Tensor:
        """Dropout, then the 1x1 classifier: per-pixel logits."""
        if self.dropout is not None:
            feat = self.dropout(feat)
        return self.conv_seg(feat)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss_by_feat(self, seg_logits: torch.Tensor, seg_label: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Losses of ``seg_logits`` (N, C, h, w) against ``seg_label`` (N, H, W) (``ignore_index`` at padding):
        the logits are resized bilinearly to the label size, each loss of ``loss_decode`` is applied (same names
        summed), and ``acc_seg`` is the pixel accuracy in percent over the labelled pixels (no gradient)."""
        name = type(self).__name__
        if seg_label.dim() == 4 and seg_label.shape[1] == 1:
            seg_label = seg_label[:, 0]
        if seg_label.dim() != 3 or seg_label.shape[0] != seg_logits.shape[0]:
            raise ValueError(f'{name}.loss_by_feat: expected labels (N, H, W) for logits {tuple(seg_logits.shape)}, '
                             f'got {tuple(seg_label.shape)}')
        seg_label = seg_label.long()
        seg_logits = _resize(seg_logits, seg_label.shape[1:], self.align_corners)
        losses = {}
        listed = self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        for loss_fn in listed:
            value = loss_fn(seg_logits, seg_label, weight=None, ignore_index=self.ignore_index)
            losses[loss_fn.loss_name] = losses[loss_fn.loss_name] + value if loss_fn.loss_name in losses else value
        losses['acc_seg'] = seg_accuracy(seg_logits, seg_label, self.ignore_index)
        return losses

    def predict_by_feat(self, seg_logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """``seg_logits`` resized bilinearly to ``size`` (the padded input's height and width)."""
        return _resize(seg_logits, size, self.align_corners)

    def extra_repr(self) -> str:
        return (f'input_transform={self.input_transform}, ignore_index={self.ignore_index}, '
                f'align_corners={self.align_corners}')


class PPM(nn.ModuleList):
    """Pooling pyramid of PSPNet: for each scale, adaptive average pooling to ``scale x scale`` and a 1x1 conv
    (``{i}.1``), resized bilinearly back to the input size; ``forward`` returns the list of these maps."""

    def __init__(self, pool_scales: Sequence[int], in_channels: int, channels: int, norm_cfg: NormCfg,
                 act_cfg: ActCfg, align_corners: bool, owner: str = 'PPM'):
        super().__init__(nn.Sequential(nn.AdaptiveAvgPool2d(s), _conv_module(in_channels, channels, 1, norm_cfg,
                                                                             act_cfg, owner))
                         for s in pool_scales)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [_resize(branch(x), x.shape[2:], self.align_corners) for branch in self]


def _pool_scales(owner: str, pool_scales) -> Tuple[int, ...]:
    if (not isinstance(pool_scales, (list, tuple)) or not pool_scales
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in pool_scales)):
        raise argument_error(owner, 'pool_scales', pool_scales, 'expected a non-empty list of positive ints')
    return tuple(pool_scales)


def _fixed_input_transform(owner: str, kwargs: dict) -> dict:
    given = kwargs.pop('input_transform', 'multiple_select')
    if given != 'multiple_select':
        raise argument_error(owner, 'input_transform', given, "this head always uses 'multiple_select'")
    return kwargs


@MODELS.register_module()
class UPerHead(BaseDecodeHead):
    """UPerNet's decode head (mmseg ``UPerHead``): a pooling pyramid on the last input, an FPN over all inputs and
    a 3x3 fusion of all levels at the first input's resolution.

    The last input goes through :class:`PPM` (``psp_modules``), is concatenated with the pooled maps and reduced by a
    3x3 conv (``bottleneck``): the coarsest level. The other inputs get 1x1 ``lateral_convs``; from the coarsest
    down, each level is resized bilinearly to the next finer one and added; every level but the coarsest gets a
    3x3 conv (``fpn_convs``); all levels, resized to the finest, are concatenated and fused by a 3x3 conv
    (``fpn_bottleneck``), then classified. Arguments as :class:`BaseDecodeHead` with a list of ``in_channels`` and
    ``in_index``; ``input_transform`` is always ``'multiple_select'``.

    Args:
        pool_scales: output sizes of the pooling pyramid.
    """

    def __init__(self, pool_scales: Sequence[int] = (1, 2, 3, 6), **kwargs):
        name = type(self).__name__
        super().__init__(input_transform='multiple_select', **_fixed_input_transform(name, kwargs))
        self.pool_scales = _pool_scales(name, pool_scales)
        top = self.in_channels[-1]
        self.psp_modules = PPM(self.pool_scales, top, self.channels, self.norm_cfg, self.act_cfg, self.align_corners,
                               owner=name)
        self.bottleneck = self._conv(top + len(self.pool_scales) * self.channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(self._conv(c, 1) for c in self.in_channels[:-1])
        self.fpn_convs = nn.ModuleList(self._conv(self.channels, 3, padding=1) for _ in self.in_channels[:-1])
        self.fpn_bottleneck = self._conv(len(self.in_channels) * self.channels, 3, padding=1)
        self.init_weights()

    def psp_forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = inputs[-1]
        return self.bottleneck(torch.cat([x, *self.psp_modules(x)], dim=1))

    def _forward_feature(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        inputs = self._transform_inputs(inputs)
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        laterals.append(self.psp_forward(inputs))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:], self.align_corners)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[2:]
        outs = [outs[0]] + [_resize(x, size, self.align_corners) for x in outs[1:]]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self._forward_feature(inputs))


@MODELS.register_module()
class FPNHead(BaseDecodeHead):
    """Semantic FPN's decode head (mmseg ``FPNHead``): each input level goes through 3x3 convs, each followed by a
    2x bilinear upsampling, until it reaches the finest level's stride (``scale_heads``); the levels are summed and
    classified. Arguments as :class:`BaseDecodeHead` with a list of ``in_channels`` and ``in_index``;
    ``input_transform`` is always ``'multiple_select'``.

    Args:
        feature_strides: stride of each input map, the first the smallest (powers of 2).
    """

    def __init__(self, feature_strides: Sequence[int], **kwargs):
        name = type(self).__name__
        super().__init__(input_transform='multiple_select', **_fixed_input_transform(name, kwargs))
        if (not isinstance(feature_strides, (list, tuple))
                or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in feature_strides)):
            raise argument_error(name, 'feature_strides', feature_strides, 'expected a list of positive ints')
        if len(feature_strides) != len(self.in_channels):
            raise argument_error(name, 'feature_strides', feature_strides,
                                 f'expected one stride per entry of in_channels={self.in_channels}')
        if min(feature_strides) != feature_strides[0]:
            raise argument_error(name, 'feature_strides', feature_strides, 'expected the smallest stride first')
        self.feature_strides = list(feature_strides)
        self.scale_heads = nn.ModuleList()
        for stride, in_channels in zip(self.feature_strides, self.in_channels):
            length = max(1, int(math.log2(stride) - math.log2(self.feature_strides[0])))
            layers = []
            for k in range(length):
                layers.append(self._conv(in_channels if k == 0 else self.channels, 3, padding=1))
                if stride != self.feature_strides[0]:
                    layers.append(_Upsample(self.align_corners))
            self.scale_heads.append(nn.Sequential(*layers))
        self.init_weights()

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)
        out = self.scale_heads[0](x[0])
        for head, level in zip(self.scale_heads[1:], x[1:]):
            out = out + _resize(head(level), out.shape[2:], self.align_corners)
        return self.cls_seg(out)


@MODELS.register_module()
class FCNHead(BaseDecodeHead):
    """FCN's decode head (mmseg ``FCNHead``), also the usual auxiliary head: ``num_convs`` convs (``convs``), then,
    with ``concat_input``, a conv over the input concatenated with their output (``conv_cat``), then the classifier.
    Arguments as :class:`BaseDecodeHead` (one input by default).

    Args:
        num_convs: number of convs (0: none, then in_channels must equal channels).
        kernel_size: their kernel size ('same' padding).
        concat_input: add ``conv_cat``.
        dilation: dilation of the ``convs``.
    """

    def __init__(self, num_convs: int = 2, kernel_size: int = 3, concat_input: bool = True, dilation: int = 1,
                 **kwargs):
        name = type(self).__name__
        if isinstance(num_convs, bool) or not isinstance(num_convs, int) or num_convs < 0:
            raise argument_error(name, 'num_convs', num_convs, 'expected an int >= 0')
        positive_int(name, 'kernel_size', kernel_size)
        positive_int(name, 'dilation', dilation)
        super().__init__(**kwargs)
        self.num_convs = num_convs
        self.kernel_size = kernel_size
        self.concat_input = bool(concat_input)
        if num_convs == 0 and self.in_channels != self.channels:
            raise argument_error(name, 'num_convs', num_convs,
                                 f'without convs in_channels ({self.in_channels}) must equal channels '
                                 f'({self.channels})')
        padding = kernel_size // 2 * dilation
        if num_convs == 0:
            self.convs = nn.Identity()
        else:
            self.convs = nn.Sequential(*(self._conv(self.in_channels if i == 0 else self.channels, kernel_size,
                                                    padding=padding, dilation=dilation) for i in range(num_convs)))
        if self.concat_input:
            self.conv_cat = self._conv(self.in_channels + self.channels, kernel_size, padding=kernel_size // 2)
        self.init_weights()

    def _forward_feature(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)
        feats = self.convs(x)
        if self.concat_input:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return feats

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self._forward_feature(inputs))
