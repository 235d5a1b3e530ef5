"""Second-stage heads of Mask R-CNN: multi-level RoIAlign and the box / mask heads.

The sampling, box and mask heads and their losses are torchvision's ``RoIHeads``; the RoI feature extractor is ours
so that it follows mmdet's ``SingleRoIExtractor``: ``roi_align(aligned=True)`` (half-pixel corrected, mmcv's
default; torchvision's ``MultiScaleRoIAlign`` always uses ``aligned=False``), explicit level strides, and mmdet's
level mapping ``floor(log2(sqrt(w * h) / finest_scale))`` clamped to the levels.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import roi_align

from ..registry import MODELS
from ..utils.options import merged_options, positive_int

__all__ = ['MultiLevelRoIAlign', 'StandardRoIHead', 'map_roi_levels']


def map_roi_levels(boxes: torch.Tensor, num_levels: int, finest_scale: float = 56.0) -> torch.Tensor:
    """Feature level of each box (mmdet): scale < 2*finest -> 0, < 4*finest -> 1, ..., clamped to the last level."""
    scale = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
    return torch.floor(torch.log2(scale / finest_scale + 1e-6)).clamp(0, num_levels - 1).long()


class MultiLevelRoIAlign(nn.Module):
    """RoIAlign over the first ``len(featmap_strides)`` feature levels, each box pooled from its own level.

    Called as torchvision's ``MultiScaleRoIAlign``: ``(features: dict, boxes: list per image, image_shapes)``; the
    features dict is in level order.
    """

    def __init__(self, output_size: int, featmap_strides: Sequence[int] = (4, 8, 16, 32), sampling_ratio: int = 0,
                 finest_scale: float = 56.0, aligned: bool = True):
        super().__init__()
        self.output_size = (int(output_size), int(output_size))
        self.featmap_strides = [int(s) for s in featmap_strides]
        self.sampling_ratio = int(sampling_ratio)
        self.finest_scale = float(finest_scale)
        self.aligned = bool(aligned)

    def forward(self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor],
                image_shapes: List[Tuple[int, int]]) -> torch.Tensor:
        maps = list(features.values())[:len(self.featmap_strides)]
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)])
        out = maps[0].new_zeros((len(rois), maps[0].shape[1]) + self.output_size)
        if len(rois) == 0:
            return out
        levels = map_roi_levels(rois[:, 1:], len(maps), self.finest_scale)
        for lvl, (feat, stride) in enumerate(zip(maps, self.featmap_strides)):
            idx = torch.nonzero(levels == lvl).squeeze(1)
            if idx.numel():
                out[idx] = roi_align(feat, rois[idx], self.output_size, spatial_scale=1.0 / stride,
                                     sampling_ratio=self.sampling_ratio, aligned=self.aligned).to(out.dtype)
        return out


@MODELS.register_module()
class StandardRoIHead(RoIHeads):
    """Box head (two shared FCs) and, with ``with_mask``, mask head (4 convs + deconv) of Mask R-CNN.

    Labels inside this module are torchvision's: 0 is background, class ``k`` is ``k + 1``; the detector converts.

    Args:
        num_classes: foreground classes.
        in_channels: channels of the neck levels.
        featmap_strides: strides of the levels RoIs are pooled from (P2-P5).
        fc_channels: width of the two box-head FCs.
        mask_channels, num_mask_convs: mask head width and depth.
        with_mask: add the mask branch (Mask R-CNN) or not (Faster R-CNN).
        sampling_ratio: RoIAlign samples per bin (0: adaptive, mmdet's default).
        train_cfg: ``pos_iou_thr`` (0.5), ``neg_iou_thr`` (0.5), ``num`` (512 RoIs per image), ``pos_fraction``
            (0.25), ``bbox_reg_weights`` ((10, 10, 5, 5), mmdet's target stds 0.1/0.2 inverted).
        test_cfg: ``score_thr`` (0.05), ``nms_iou`` (0.5), ``max_per_img`` (100).
    """

    def __init__(self, num_classes: int, in_channels: int = 256, featmap_strides: Sequence[int] = (4, 8, 16, 32),
                 fc_channels: int = 1024, mask_channels: int = 256, num_mask_convs: int = 4, with_mask: bool = True,
                 sampling_ratio: int = 0, train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None):
        positive_int('StandardRoIHead', 'num_classes', num_classes)
        train = merged_options('StandardRoIHead', 'train_cfg', train_cfg, dict(
            pos_iou_thr=0.5, neg_iou_thr=0.5, num=512, pos_fraction=0.25, bbox_reg_weights=(10., 10., 5., 5.)))
        test = merged_options('StandardRoIHead', 'test_cfg', test_cfg,
                              dict(score_thr=0.05, nms_iou=0.5, max_per_img=100))
        kwargs = {}
        if with_mask:
            kwargs = dict(
                mask_roi_pool=MultiLevelRoIAlign(14, featmap_strides, sampling_ratio),
                mask_head=MaskRCNNHeads(in_channels, [mask_channels] * num_mask_convs, dilation=1),
                mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1))
        super().__init__(
            box_roi_pool=MultiLevelRoIAlign(7, featmap_strides, sampling_ratio),
            box_head=TwoMLPHead(in_channels * 7 * 7, fc_channels),
            box_predictor=FastRCNNPredictor(fc_channels, num_classes + 1),
            fg_iou_thresh=train['pos_iou_thr'], bg_iou_thresh=train['neg_iou_thr'],
            batch_size_per_image=train['num'], positive_fraction=train['pos_fraction'],
            bbox_reg_weights=tuple(train['bbox_reg_weights']),
            score_thresh=test['score_thr'], nms_thresh=test['nms_iou'], detections_per_img=test['max_per_img'],
            **kwargs)
        self.num_classes = num_classes
