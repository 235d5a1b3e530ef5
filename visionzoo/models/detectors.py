"""Object detectors: backbone -> neck -> head(s), trained and evaluated through mmengine's ``BaseModel`` API.

Inputs follow the detection data contract (``DetDataPreprocessor`` output: a padded batch and one dict per image with
``img_shape``, ``scale_factor``, ``gt_bboxes``, ``gt_labels``[, ``gt_masks``]). ``predict`` returns one dict per image
with ``pred_bboxes`` (xyxy, original image pixels), ``pred_scores``, ``pred_labels`` (0-based)[, ``pred_masks``].

Target assignment, losses and post-processing are torchvision's (``torchvision.models.detection``), called on our
modules; the defaults are mmdet's 1x settings. Differences to mmdet that remain (documented, not bugs):

- RetinaNet: the focal loss is normalised by each image's positives and averaged over images (mmdet: by the
  batch's positives); boxes below ``pos_iou_thr`` keep their best-matching anchor (mmdet: ``min_pos_iou=0``, same).
- FCOS: GIoU box loss and a centerness loss averaged over positives (mmdet's FCOS weighs the IoU loss by the
  centerness targets); center sampling radius 1.5 (mmdet's ``center_sampling=True`` variant).
- Mask R-CNN: mask targets are cut from the gt masks with ``roi_align(aligned=False)`` (torchvision);
  RoI features use ``aligned=True`` as mmdet.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
from torchvision.models.detection import FCOS as _TVFCOS
from torchvision.models.detection import RetinaNet as _TVRetinaNet
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork

from ..registry import MODELS
from ..utils.errors import ArgumentError
from ..utils.options import argument_error, merged_options
from .base import BackboneModel

__all__ = ['BaseDetector', 'RetinaNet', 'FCOS', 'MaskRCNN']

_DENSE_TEST = dict(nms_pre=1000, score_thr=0.05, nms_iou=0.5, max_per_img=100)


class BaseDetector(BackboneModel):
    """Backbone + optional neck and the ``forward(mode=...)`` switch (:class:`~visionzoo.models.base.BackboneModel`),
    with the detection data contract.

    Args:
        backbone: backbone config (e.g. ``dict(type='TimmBackbone', model_name='van_b0', out_indices=(1, 2, 3))``).
        neck: neck config; ``in_channels`` defaults to the backbone's ``out_channels``.
        data_preprocessor: defaults to ``DetDataPreprocessor`` with ImageNet mean/std and padding to 32.
    """

    def __init__(self, backbone: dict, neck: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(backbone, neck, data_preprocessor=data_preprocessor or dict(type='DetDataPreprocessor'),
                         init_cfg=init_cfg)

    # ------------------------------------------------------------------ contract helpers
    @staticmethod
    def _image_list(inputs: torch.Tensor, samples: Sequence[dict]) -> ImageList:
        return ImageList(inputs, [tuple(int(v) for v in s['img_shape']) for s in samples])

    def _check_strides(self, head_arg: str, head, image_list: ImageList, feats: Sequence[torch.Tensor]) -> None:
        """Refuse feature maps at other strides (or in another number) than ``head``'s anchors, naming this detector
        and the head's strides argument: ``RetinaNet(bbox_head.anchor_generator.strides=[8, ...]): ...``."""
        head.anchor_generator.check_strides(image_list.tensors.shape[-2:], [f.shape[-2:] for f in feats],
                                            owner=type(self).__name__, arg=f'{head_arg}.{head.strides_arg}')

    def _targets(self, samples: Sequence[dict], label_offset: int = 0, masks: bool = False) -> List[dict]:
        targets = []
        for s in samples:
            t = dict(boxes=s['gt_bboxes'].float(), labels=s['gt_labels'].long() + label_offset)
            if masks:
                if 'gt_masks' not in s:
                    raise argument_error(type(self).__name__, 'roi_head.with_mask', True,
                                         'the mask head needs gt_masks in every data sample: load them with '
                                         'LoadAnnotations(with_mask=True), or set with_mask=False')
                t['masks'] = s['gt_masks']
            targets.append(t)
        return targets

    @staticmethod
    def _pack(detections: Sequence[dict], samples: Sequence[dict], label_offset: int = 0,
              mask_thr: float = 0.5) -> List[dict]:
        """Detections on the resized (and maybe flipped) input -> predictions on the original image."""
        preds = []
        for det, s in zip(detections, samples):
            boxes = det['boxes'].float()
            masks = det.get('masks')
            h, w = (int(v) for v in s['img_shape'])
            if s.get('flip'):
                direction = s.get('flip_direction', 'horizontal')
                boxes = boxes.clone()
                if direction == 'horizontal':
                    boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
                else:
                    boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
                if masks is not None:
                    masks = masks.flip(-1 if direction == 'horizontal' else -2)
            sx, sy = (float(v) for v in s['scale_factor'])
            oh, ow = (int(v) for v in s['ori_shape'])
            boxes = boxes / boxes.new_tensor([sx, sy, sx, sy])
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
            pred = dict(img_id=s.get('img_id'), img_path=s.get('img_path'), ori_shape=(oh, ow), pred_bboxes=boxes,
                        pred_scores=det['scores'].float(), pred_labels=det['labels'].long() - label_offset)
            if masks is not None:
                pasted = paste_masks_in_image(masks.float(), boxes, (oh, ow))
                pred['pred_masks'] = pasted[:, 0] >= mask_thr
            preds.append(pred)
        return preds


class _DenseDetector(BaseDetector):
    """One-stage detector whose head, loss and post-processing come from a torchvision detection class."""

    _torchvision_class = None  # RetinaNet or FCOS: its compute_loss / postprocess_detections run on this module
    _loss_names: Dict[str, str] = {}

    def __init__(self, backbone: dict, neck: Optional[dict], bbox_head: dict, test_cfg: Optional[dict] = None,
                 **kwargs):
        super().__init__(backbone, neck, **kwargs)
        self.bbox_head = MODELS.build(bbox_head)
        test = merged_options(type(self).__name__, 'test_cfg', test_cfg, _DENSE_TEST)
        # the attribute names torchvision's methods read
        self.score_thresh = test['score_thr']
        self.nms_thresh = test['nms_iou']
        self.detections_per_img = test['max_per_img']
        self.topk_candidates = test['nms_pre']

    @property
    def head(self):
        return self.bbox_head

    @property
    def anchor_generator(self):
        return self.bbox_head.anchor_generator

    def _forward(self, inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.bbox_head(self.extract_feat(inputs))

    def _run_head(self, inputs, samples):
        feats = self.extract_feat(inputs)
        image_list = self._image_list(inputs, samples)
        self._check_strides('bbox_head', self.bbox_head, image_list, feats)
        return feats, image_list, self.bbox_head(feats), self.anchor_generator(image_list, feats)

    def _rename(self, losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {self._loss_names[k]: v for k, v in losses.items()}

    def predict(self, inputs: torch.Tensor, data_samples: List[dict]) -> List[dict]:
        feats, image_list, outputs, anchors = self._run_head(inputs, data_samples)
        sizes = [f.shape[-2] * f.shape[-1] * self.anchor_generator.num_base_anchors for f in feats]
        split_outputs = {k: list(v.split(sizes, dim=1)) for k, v in outputs.items()}
        split_anchors = [list(a.split(sizes)) for a in anchors]
        dets = self._torchvision_class.postprocess_detections(self, split_outputs, split_anchors,
                                                              image_list.image_sizes)
        return self._pack(dets, data_samples)


@MODELS.register_module()
class RetinaNet(_DenseDetector):
    """RetinaNet (Lin et al., 2017): anchors at 5 levels, IoU assignment, focal loss.

    Args:
        bbox_head: ``RetinaHead`` config (``num_classes``, ``in_channels``, ``anchor_generator``).
        train_cfg: ``pos_iou_thr`` (0.5), ``neg_iou_thr`` (0.4): anchors in between are ignored.
        test_cfg: ``nms_pre`` (1000 per level), ``score_thr`` (0.05), ``nms_iou`` (0.5), ``max_per_img`` (100).
    """

    _torchvision_class = _TVRetinaNet
    _loss_names = dict(classification='loss_cls', bbox_regression='loss_bbox')

    def __init__(self, backbone: dict, neck: Optional[dict], bbox_head: dict, train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None, **kwargs):
        super().__init__(backbone, neck, bbox_head, test_cfg, **kwargs)
        train = merged_options(type(self).__name__, 'train_cfg', train_cfg, dict(pos_iou_thr=0.5, neg_iou_thr=0.4))
        self.proposal_matcher = det_utils.Matcher(train['pos_iou_thr'], train['neg_iou_thr'],
                                                  allow_low_quality_matches=True)
        self.box_coder = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))

    def loss(self, inputs: torch.Tensor, data_samples: List[dict]) -> Dict[str, torch.Tensor]:
        _, _, outputs, anchors = self._run_head(inputs, data_samples)
        return self._rename(_TVRetinaNet.compute_loss(self, self._targets(data_samples), outputs, anchors))


@MODELS.register_module()
class FCOS(_DenseDetector):
    """FCOS (Tian et al., 2019): anchor-free points at 5 levels, size ranges per level, centerness.

    Args:
        bbox_head: ``FCOSHead`` config (``num_classes``, ``in_channels``, ``strides``).
        train_cfg: ``center_sampling_radius`` (1.5 strides).
        test_cfg: as :class:`RetinaNet`.
    """

    _torchvision_class = _TVFCOS
    _loss_names = dict(classification='loss_cls', bbox_regression='loss_bbox', bbox_ctrness='loss_centerness')

    def __init__(self, backbone: dict, neck: Optional[dict], bbox_head: dict, train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None, **kwargs):
        super().__init__(backbone, neck, bbox_head, test_cfg, **kwargs)
        train = merged_options(type(self).__name__, 'train_cfg', train_cfg, dict(center_sampling_radius=1.5))
        self.center_sampling_radius = train['center_sampling_radius']
        self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True)

    def loss(self, inputs: torch.Tensor, data_samples: List[dict]) -> Dict[str, torch.Tensor]:
        feats, _, outputs, anchors = self._run_head(inputs, data_samples)
        sizes = [f.shape[-2] * f.shape[-1] for f in feats]
        return self._rename(_TVFCOS.compute_loss(self, self._targets(data_samples), outputs, anchors, sizes))


@MODELS.register_module()
class MaskRCNN(BaseDetector):
    """Mask R-CNN (He et al., 2017): RPN proposals, RoIAlign, box and mask heads (``with_mask=False``: Faster R-CNN).

    Args:
        rpn_head: ``RPNHead`` config (``in_channels``, ``anchor_generator``).
        roi_head: ``StandardRoIHead`` config (``num_classes``, its own ``train_cfg``/``test_cfg``).
        train_cfg: ``rpn`` (``pos_iou_thr`` 0.7, ``neg_iou_thr`` 0.3, ``num`` 256, ``pos_fraction`` 0.5) and
            ``rpn_proposal`` (``nms_pre`` 2000 per level, ``max_per_img`` 1000, ``nms_iou`` 0.7).
        test_cfg: ``rpn`` (``nms_pre`` 1000, ``max_per_img`` 1000, ``nms_iou`` 0.7), ``mask_thr_binary`` (0.5).
    """

    def __init__(self, backbone: dict, neck: Optional[dict], rpn_head: dict, roi_head: dict,
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None, **kwargs):
        super().__init__(backbone, neck, **kwargs)
        name = type(self).__name__
        train_cfg = dict(merged_options(name, 'train_cfg', train_cfg, dict(rpn=None, rpn_proposal=None)))
        test_cfg = dict(merged_options(name, 'test_cfg', test_cfg, dict(rpn=None, mask_thr_binary=0.5)))
        rpn_train = merged_options(name, 'train_cfg.rpn', train_cfg['rpn'],
                                   dict(pos_iou_thr=0.7, neg_iou_thr=0.3, num=256, pos_fraction=0.5))
        rpn_prop = merged_options(name, 'train_cfg.rpn_proposal', train_cfg['rpn_proposal'],
                                  dict(nms_pre=2000, max_per_img=1000, nms_iou=0.7))
        rpn_test = merged_options(name, 'test_cfg.rpn', test_cfg['rpn'],
                                  dict(nms_pre=1000, max_per_img=1000, nms_iou=0.7))
        self.mask_thr_binary = test_cfg['mask_thr_binary']
        if rpn_prop['nms_iou'] != rpn_test['nms_iou']:
            raise ArgumentError(f"{name}(train_cfg.rpn_proposal.nms_iou={rpn_prop['nms_iou']!r}, "
                                f"test_cfg.rpn.nms_iou={rpn_test['nms_iou']!r}): must be equal (one RPN NMS "
                                f"threshold)")
        head = MODELS.build(rpn_head)
        self.rpn = RegionProposalNetwork(
            head.anchor_generator, head, rpn_train['pos_iou_thr'], rpn_train['neg_iou_thr'], rpn_train['num'],
            rpn_train['pos_fraction'], dict(training=rpn_prop['nms_pre'], testing=rpn_test['nms_pre']),
            dict(training=rpn_prop['max_per_img'], testing=rpn_test['max_per_img']), rpn_test['nms_iou'])
        self.roi_head = MODELS.build(roi_head)

    @property
    def with_mask(self) -> bool:
        return self.roi_head.has_mask()

    def _features(self, inputs):
        return OrderedDict((str(i), f) for i, f in enumerate(self.extract_feat(inputs)))

    def _forward(self, inputs: torch.Tensor):
        return self.rpn.head(list(self._features(inputs).values()))

    def loss(self, inputs: torch.Tensor, data_samples: List[dict]) -> Dict[str, torch.Tensor]:
        feats = self._features(inputs)
        image_list = self._image_list(inputs, data_samples)
        self._check_strides('rpn_head', self.rpn.head, image_list, list(feats.values()))
        targets = self._targets(data_samples, label_offset=1, masks=self.with_mask)
        proposals, rpn_losses = self.rpn(image_list, feats, targets)
        _, roi_losses = self.roi_head(feats, proposals, image_list.image_sizes, targets)
        names = dict(loss_objectness='loss_rpn_cls', loss_rpn_box_reg='loss_rpn_bbox', loss_classifier='loss_cls',
                     loss_box_reg='loss_bbox', loss_mask='loss_mask')
        return {names[k]: v for k, v in {**rpn_losses, **roi_losses}.items()}

    def predict(self, inputs: torch.Tensor, data_samples: List[dict]) -> List[dict]:
        feats = self._features(inputs)
        image_list = self._image_list(inputs, data_samples)
        self._check_strides('rpn_head', self.rpn.head, image_list, list(feats.values()))
        proposals, _ = self.rpn(image_list, feats)
        dets, _ = self.roi_head(feats, proposals, image_list.image_sizes)
        return self._pack(dets, data_samples, label_offset=1, mask_thr=self.mask_thr_binary)
