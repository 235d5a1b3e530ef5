"""Dense detection heads (RetinaNet, FCOS, RPN) and the anchor / point generator they share.

The heads are torchvision's (``torchvision.models.detection``) with mmdet's configuration names around them: each
head owns its :class:`AnchorGenerator`, as in mmdet, so a config describes anchors next to the head that uses them.
Anchors follow mmdet's ``AnchorGenerator`` (base anchors of ``stride * octave_base_scale * 2**(i/scales_per_octave)``
centred on ``center_offset * stride`` of each cell, not rounded) with the level strides given explicitly: torchvision's
own generator derives strides as ``image_size // feature_size``, which is wrong for stride-64/128 levels of images
padded to a multiple of 32.
"""
import math
from typing import List, Optional, Sequence

import torch
from torch import nn
from torchvision.models.detection.fcos import FCOSHead as _TVFCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead as _TVRetinaNetHead
from torchvision.models.detection.rpn import RPNHead as _TVRPNHead

from ..layers.norm_act import NormCfg, build_norm
from ..registry import MODELS
from ..utils.errors import ArgumentError
from ..utils.options import argument_error, positive_int

__all__ = ['AnchorGenerator', 'RetinaHead', 'FCOSHead', 'RPNHead']


def _positive_floats(owner: str, arg: str, values) -> List[float]:
    listed = list(values) if isinstance(values, (list, tuple)) else [values]
    if not listed or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in listed):
        raise argument_error(owner, arg, values, 'expected a list of positive numbers')
    return [float(v) for v in listed]


class AnchorGenerator(nn.Module):
    """Anchors of every feature level, as one ``(sum_l H_l * W_l * A, 4)`` xyxy tensor per image.

    Args:
        strides: stride of each feature level (pixels).
        ratios: anchor aspect ratios ``h / w``.
        scales: anchor sizes in units of the stride (mmdet ``scales``), or
        octave_base_scale, scales_per_octave: RetinaNet's scales ``octave_base_scale * 2 ** (i / scales_per_octave)``.
        center_offset: anchor centre within a cell, in strides (0 as mmdet's anchors, 0.5 for FCOS points).

    The order within a location is ratio-major (``A = len(ratios) * len(scales)``), matching mmdet; anchors are
    laid out location by location (row-major), so the ``(N, H*W*A, K)`` head outputs line up with them.
    """

    def __init__(self, strides: Sequence[int], ratios: Sequence[float] = (1.0,),
                 scales: Optional[Sequence[float]] = None, octave_base_scale: Optional[float] = None,
                 scales_per_octave: Optional[int] = None, center_offset: float = 0.0):
        super().__init__()
        self.strides = [int(s) for s in _positive_floats('AnchorGenerator', 'strides', strides)]
        ratios = _positive_floats('AnchorGenerator', 'ratios', ratios)
        if scales is None:
            if octave_base_scale is None or scales_per_octave is None:
                raise ArgumentError(f'AnchorGenerator(scales=None, octave_base_scale={octave_base_scale!r}, '
                                    f'scales_per_octave={scales_per_octave!r}): give either scales or '
                                    f'octave_base_scale and scales_per_octave')
            scales = [octave_base_scale * 2 ** (i / scales_per_octave) for i in range(int(scales_per_octave))]
        elif octave_base_scale is not None:
            raise ArgumentError(f'AnchorGenerator(scales={scales!r}, octave_base_scale={octave_base_scale!r}): give '
                                f'scales or octave_base_scale, not both')
        scales = _positive_floats('AnchorGenerator', 'scales', scales)
        self.center_offset = float(center_offset)
        h_ratios = torch.tensor(ratios, dtype=torch.float64).sqrt()
        w_ratios = 1.0 / h_ratios
        base = []
        for stride in self.strides:
            s = torch.tensor(scales, dtype=torch.float64) * stride
            ws = (w_ratios[:, None] * s[None, :]).reshape(-1)
            hs = (h_ratios[:, None] * s[None, :]).reshape(-1)
            base.append(torch.stack([-ws, -hs, ws, hs], dim=1).float() / 2)
        self._base = base  # plain tensors: recomputed from the config, never saved in checkpoints
        self.num_base_anchors = len(ratios) * len(scales)

    def num_anchors_per_location(self) -> List[int]:
        return [self.num_base_anchors] * len(self.strides)

    def grid_anchors(self, sizes: Sequence[Sequence[int]], device, dtype=torch.float32) -> List[torch.Tensor]:
        """Anchors of each level for feature maps of ``sizes`` ``[(H, W), ...]``: a list of ``(H*W*A, 4)``."""
        if len(sizes) != len(self.strides):
            raise argument_error('AnchorGenerator', 'strides', self.strides, self._level_count_problem(len(sizes)))
        out = []
        for (h, w), stride, base in zip(sizes, self.strides, self._base):
            ys = (torch.arange(h, device=device, dtype=dtype) + self.center_offset) * stride
            xs = (torch.arange(w, device=device, dtype=dtype) + self.center_offset) * stride
            yy, xx = torch.meshgrid(ys, xs, indexing='ij')
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + base.to(device=device, dtype=dtype)[None]).reshape(-1, 4))
        return out

    def _level_count_problem(self, num_levels: int) -> str:
        return (f'{num_levels} feature levels but {len(self.strides)} strides; the neck\'s num_outs and the strides '
                f'must agree')

    def check_strides(self, input_size: Sequence[int], feature_sizes: Sequence[Sequence[int]],
                      owner: str = 'AnchorGenerator', arg: str = 'strides') -> None:
        """Refuse feature maps whose number or size does not fit the configured strides for a (padded) input of
        ``input_size``: such a model would train with anchors in the wrong places and learn nothing.

        The :class:`ArgumentError` starts with ``owner(arg=strides)``: a detector names itself and the path of the
        strides among its arguments (``RetinaNet(bbox_head.anchor_generator.strides=[8, ...])``).
        """
        if len(feature_sizes) != len(self.strides):
            raise argument_error(owner, arg, self.strides, self._level_count_problem(len(feature_sizes)))
        for level, ((h, w), stride) in enumerate(zip(feature_sizes, self.strides)):
            expected = (math.ceil(input_size[0] / stride), math.ceil(input_size[1] / stride))
            if abs(h - expected[0]) > 1 or abs(w - expected[1]) > 1:
                actual = max(input_size[0] / h, input_size[1] / w)
                raise argument_error(
                    owner, arg, self.strides,
                    f'feature level {level} is {h}x{w} for a {input_size[0]}x{input_size[1]} input, i.e. stride '
                    f'~{actual:g}, but the head expects stride {stride}; check the backbone\'s out_indices (timm '
                    f'feature indices: a ResNet\'s index 0 is its stride-2 stem) and the neck\'s start_level/num_outs '
                    f'against these strides')

    def forward(self, image_list, feature_maps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """torchvision's anchor-generator call: one tensor of all levels' anchors per image."""
        self.check_strides(image_list.tensors.shape[-2:], [f.shape[-2:] for f in feature_maps])
        levels = self.grid_anchors([f.shape[-2:] for f in feature_maps], feature_maps[0].device,
                                   feature_maps[0].dtype)
        anchors = torch.cat(levels)
        return [anchors for _ in range(len(image_list.image_sizes))]


def _norm_layer(norm: NormCfg, in_channels: int, owner: str):
    """torchvision's ``norm_layer`` (channels -> module) for a norm spec; built once here to check the spec."""
    if norm is None:
        return None
    build_norm(norm, in_channels, owner=owner, arg='norm', allowed=('GN',))
    return lambda channels: build_norm(norm, channels, owner=owner, arg='norm', allowed=('GN',))


@MODELS.register_module()
class RetinaHead(_TVRetinaNetHead):
    """RetinaNet head: 4 shared-width convs per branch, sigmoid focal classification, ``(dx, dy, dw, dh)`` boxes.

    Args:
        num_classes: foreground classes (no background class: sigmoid outputs).
        in_channels: channels of every neck level.
        anchor_generator: :class:`AnchorGenerator` arguments; mmdet's RetinaNet default (octave base scale 4, 3
            scales per octave, ratios 0.5/1/2, strides 8..128).
        norm: ``None`` (mmdet, torchvision v1) or ``'GN'`` (torchvision's RetinaNet v2: 32 groups), or
            ``dict(type='GN', num_groups=..., eps=...)`` (:mod:`visionzoo.layers.norm_act`).
        prior_prob: initial foreground probability of the classifier bias.
    """

    strides_arg = 'anchor_generator.strides'  # where the level strides are among the arguments (error messages)

    def __init__(self, num_classes: int, in_channels: int = 256, anchor_generator: Optional[dict] = None,
                 norm: NormCfg = None, prior_prob: float = 0.01):
        anchor_generator = anchor_generator or dict(octave_base_scale=4, scales_per_octave=3, ratios=(0.5, 1.0, 2.0),
                                                    strides=(8, 16, 32, 64, 128))
        prior = AnchorGenerator(**anchor_generator)
        super().__init__(in_channels, prior.num_base_anchors, positive_int('RetinaHead', 'num_classes', num_classes),
                         norm_layer=_norm_layer(norm, in_channels, 'RetinaHead'))
        self.classification_head.cls_logits.bias.data.fill_(-math.log((1 - prior_prob) / prior_prob))
        self.anchor_generator = prior
        self.num_classes = num_classes


@MODELS.register_module()
class FCOSHead(_TVFCOSHead):
    """FCOS head: 4 GroupNorm convs per branch, per-point class scores, ``ltrb`` distances and centerness.

    Args:
        num_classes: foreground classes.
        in_channels: channels of every neck level.
        strides: stride of each neck level (mmdet's default 8..128).
        num_convs: convs per branch.
    """

    strides_arg = 'strides'

    def __init__(self, num_classes: int, in_channels: int = 256, strides: Sequence[int] = (8, 16, 32, 64, 128),
                 num_convs: int = 4):
        positive_int('FCOSHead', 'num_classes', num_classes)
        if positive_int('FCOSHead', 'in_channels', in_channels) % 32:  # torchvision's FCOS head: GroupNorm(32, C)
            raise argument_error('FCOSHead', 'in_channels', in_channels, 'expected a multiple of 32 (the head\'s '
                                 'GroupNorms have 32 groups)')
        super().__init__(in_channels, 1, num_classes, num_convs=num_convs)
        # points at cell centres (mmdet's MlvlPointGenerator offset 0.5) with the stride as the anchor size:
        # torchvision's FCOS target assignment reads the size as the level's stride
        self.anchor_generator = AnchorGenerator(strides, ratios=(1.0,), scales=(1.0,), center_offset=0.5)
        self.num_classes = num_classes


@MODELS.register_module()
class RPNHead(_TVRPNHead):
    """Region proposal head: a 3x3 conv, then objectness and box deltas for each anchor.

    Args:
        in_channels: channels of every neck level.
        anchor_generator: :class:`AnchorGenerator` arguments; mmdet's Mask R-CNN default (scale 8, ratios
            0.5/1/2, strides 4..64).
    """

    strides_arg = 'anchor_generator.strides'

    def __init__(self, in_channels: int = 256, anchor_generator: Optional[dict] = None):
        anchor_generator = anchor_generator or dict(scales=(8,), ratios=(0.5, 1.0, 2.0), strides=(4, 8, 16, 32, 64))
        prior = AnchorGenerator(**anchor_generator)
        super().__init__(in_channels, prior.num_base_anchors)
        self.anchor_generator = prior
