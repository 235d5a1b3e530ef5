"""Semantic segmentation: mmseg 1.x's ``EncoderDecoder`` (backbone -> neck -> decode head [+ auxiliary heads]).

Inputs follow the segmentation data contract (``PackSegInputs`` items batched by ``det_collate`` and
``SegDataPreprocessor``: a padded batch and one dict per image with ``img_shape``, ``ori_shape``, ``flip``,
``flip_direction``[, ``gt_sem_seg``]). Decode heads follow the contract of :mod:`visionzoo.heads.seg_heads`:
``forward(feats) -> logits``, ``loss_by_feat(logits, labels (N, H, W)) -> dict``, ``predict_by_feat(logits, size)``
and the attributes ``num_classes`` and ``align_corners``.

``predict`` follows mmseg 1.x's ``EncoderDecoder.inference`` and ``postprocess_result``: whole-image or sliding-window
logits on the padded batch, then per image: the padding cut off (bottom/right, ``img_shape``), a pipeline flip
undone, bilinear resize to ``ori_shape`` (``align_corners`` of the decode head), argmax.

Test-time augmentation is a ``test_cfg`` option here (``scales``, ``flip``), not mmseg's ``SegTTAModel`` wrapper with
a ``TestTimeAug`` pipeline: every scaled (and flipped) copy of the image goes through the same inference, its
logits are brought back to ``ori_shape`` as above and soft-maxed, and the probabilities are averaged, as
``SegTTAModel.merge_preds`` does. The difference: ``scales`` multiply the size of the image the model receives
(after the test pipeline's ``Resize``), while mmseg's TTA pipelines resize the original image by each ratio;
for mmseg's numbers, drop the ``Resize`` from the test pipeline. Images are rescaled here after normalisation,
bilinearly (mmcv: the uint8 image, cv2 bilinear), to ``int(size * scale + 0.5)`` (mmcv's rounding).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import MODELS
from ..utils.options import argument_error, merged_options
from .data_preprocessor import _size_pair
from .base import BackboneModel
from .seg_checkpoint import convert_segmentor_state_dict

__all__ = ['EncoderDecoder']

_TEST_DEFAULTS = dict(mode='whole', crop_size=None, stride=None, scales=None, flip=False,
                      flip_direction='horizontal')
_FLIP_DIMS = dict(horizontal=(-1,), vertical=(-2,))


def _flip(x: torch.Tensor, direction: Optional[str]) -> torch.Tensor:
    return x if direction is None else x.flip(_FLIP_DIMS[direction])


@MODELS.register_module()
class EncoderDecoder(BackboneModel):
    """mmseg 1.x's ``EncoderDecoder``.

    Args:
        backbone: backbone config returning a list of NCHW maps (e.g. ``TimmBackbone``).
        decode_head: decode head config (``UPerHead``, ``FPNHead``, ``FCNHead``, ...).
        neck: optional neck config; ``in_channels`` defaults to the backbone's ``out_channels``.
        auxiliary_head: None, a head config or a list of them; trained on the same features (losses ``aux.*``, or
            ``aux_0.*``, ``aux_1.*`` for a list, as mmseg), never used for prediction.
        train_cfg: None or ``{}`` (mmseg's heads take no training options here).
        test_cfg: ``mode`` ``'whole'`` (default) or ``'slide'`` with ``crop_size`` and ``stride`` ((h, w) or an int;
            mmseg's window grid, overlapping logits averaged); TTA: ``scales`` (e.g. ``[0.5, 0.75, 1.0, 1.25, 1.5,
            1.75]``; None: no rescaling) and ``flip`` (also the ``flip_direction``-flipped copy of each scale).
        data_preprocessor: defaults to ``SegDataPreprocessor`` (ImageNet mean/std, no padding).
    """

    def __init__(self, backbone: dict, decode_head: dict, neck: Optional[dict] = None,
                 auxiliary_head=None, train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(backbone, neck, data_preprocessor=data_preprocessor or dict(type='SegDataPreprocessor'),
                         init_cfg=init_cfg)
        name = type(self).__name__
        merged_options(name, 'train_cfg', train_cfg, {})
        self.test_cfg = self._check_test_cfg(test_cfg)
        self.decode_head = MODELS.build(decode_head)
        self.align_corners = self.decode_head.align_corners
        self.num_classes = self.decode_head.num_classes
        self.out_channels = self.num_classes
        if auxiliary_head is None or isinstance(auxiliary_head, dict):
            self.auxiliary_head = None if auxiliary_head is None else MODELS.build(auxiliary_head)
        elif isinstance(auxiliary_head, (list, tuple)) and all(isinstance(h, dict) for h in auxiliary_head):
            self.auxiliary_head = nn.ModuleList(MODELS.build(h) for h in auxiliary_head)
        else:
            raise argument_error(name, 'auxiliary_head', auxiliary_head, 'expected None, a head config or a list '
                                                                         'of head configs')

    @classmethod
    def _check_test_cfg(cls, test_cfg: Optional[dict]) -> dict:
        name = cls.__name__
        cfg = merged_options(name, 'test_cfg', test_cfg, _TEST_DEFAULTS)
        if cfg['mode'] not in ('whole', 'slide'):
            raise argument_error(name, 'test_cfg.mode', cfg['mode'], "expected 'whole' or 'slide'")
        if cfg['mode'] == 'slide':
            for key in ('crop_size', 'stride'):
                if cfg[key] is None:
                    raise argument_error(name, f'test_cfg.{key}', None, "mode='slide' needs a positive int or an "
                                                                        "(h, w) pair of positive ints")
                cfg[key] = _size_pair(name, f'test_cfg.{key}', cfg[key])
            if any(s > c for s, c in zip(cfg['stride'], cfg['crop_size'])):
                raise argument_error(name, 'test_cfg.stride', cfg['stride'], f"expected at most crop_size "
                                     f"{cfg['crop_size']} in each dimension (larger strides leave pixels uncovered)")
        scales = cfg['scales']
        if scales is not None:
            if (not isinstance(scales, (list, tuple)) or not scales
                    or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0 for s in scales)):
                raise argument_error(name, 'test_cfg.scales', scales, 'expected None or a non-empty list of '
                                                                      'positive numbers')
            cfg['scales'] = [float(s) for s in scales]
        if not isinstance(cfg['flip'], bool):
            raise argument_error(name, 'test_cfg.flip', cfg['flip'], 'expected True or False')
        if cfg['flip_direction'] not in _FLIP_DIMS:
            raise argument_error(name, 'test_cfg.flip_direction', cfg['flip_direction'],
                                 "expected 'horizontal' or 'vertical'")
        return cfg

    def convert_checkpoint(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """A checkpoint's weights -> this model's keys, before a strict load (the loaders call it: ``load_from``,
        ``tools/test.py CONFIG CKPT``): this model's own checkpoints unchanged, official mmseg ones through
        :func:`visionzoo.models.seg_checkpoint.convert_segmentor_state_dict` (the backbone's
        ``convert_state_dict`` for ``backbone.*``; heads and necks already use mmseg's names)."""
        return convert_segmentor_state_dict(self, state)

    @property
    def with_auxiliary_head(self) -> bool:
        return self.auxiliary_head is not None

    # ------------------------------------------------------------------ training
    def _labels(self, data_samples: Optional[Sequence[dict]]) -> torch.Tensor:
        """The (N, H, W) int64 label maps of the batch (padded to one size by ``SegDataPreprocessor``)."""
        name = type(self).__name__
        if not data_samples:
            raise ValueError(f'{name}.loss: no data_samples (expected one dict with gt_sem_seg per image)')
        labels = []
        for i, s in enumerate(data_samples):
            if s.get('gt_sem_seg') is None:
                raise ValueError(f"{name}.loss: data sample {i} ({s.get('img_path', 'no img_path')}) has no "
                                 f'gt_sem_seg (load it with LoadAnnotations and pack it with PackSegInputs)')
            seg = s['gt_sem_seg']
            labels.append(seg[0] if seg.dim() == 3 and seg.shape[0] == 1 else seg)
        if len({tuple(t.shape) for t in labels}) > 1:
            raise ValueError(f'{name}.loss: gt_sem_seg maps of different sizes {[tuple(t.shape) for t in labels]} '
                             f'(SegDataPreprocessor pads them to the batch size while training)')
        return torch.stack(labels).long()

    def loss(self, inputs: torch.Tensor, data_samples: List[dict]) -> Dict[str, torch.Tensor]:
        labels = self._labels(data_samples)
        feats = self.extract_feat(inputs)
        losses = {f'decode.{k}': v for k, v in self.decode_head.loss_by_feat(self.decode_head(feats), labels).items()}
        if isinstance(self.auxiliary_head, nn.ModuleList):
            for i, head in enumerate(self.auxiliary_head):
                losses.update({f'aux_{i}.{k}': v for k, v in head.loss_by_feat(head(feats), labels).items()})
        elif self.auxiliary_head is not None:
            head = self.auxiliary_head
            losses.update({f'aux.{k}': v for k, v in head.loss_by_feat(head(feats), labels).items()})
        return losses

    # ------------------------------------------------------------------ inference
    def _forward(self, inputs: torch.Tensor, data_samples: Optional[List[dict]] = None) -> torch.Tensor:
        """Decode-head logits at the head's resolution (mode='tensor')."""
        return self.decode_head(self.extract_feat(inputs))

    def encode_decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits at the input's size."""
        return self.decode_head.predict_by_feat(self._forward(inputs), tuple(inputs.shape[-2:]))

    def slide_inference(self, inputs: torch.Tensor) -> torch.Tensor:
        """mmseg's window grid: starts at multiples of ``stride``, the last window of a row/column moved back to end at
        the border (windows larger than the image shrink to it); logits of overlapping windows are averaged."""
        (h_crop, w_crop), (h_stride, w_stride) = self.test_cfg['crop_size'], self.test_cfg['stride']
        n, _, h, w = inputs.shape
        rows = max(h - h_crop + h_stride - 1, 0) // h_stride + 1
        cols = max(w - w_crop + w_stride - 1, 0) // w_stride + 1
        logits, count = None, inputs.new_zeros((1, 1, h, w))
        for r in range(rows):
            y2 = min(r * h_stride + h_crop, h)
            y1 = max(y2 - h_crop, 0)
            for c in range(cols):
                x2 = min(c * w_stride + w_crop, w)
                x1 = max(x2 - w_crop, 0)
                window = self.encode_decode(inputs[:, :, y1:y2, x1:x2])
                if logits is None:
                    logits = inputs.new_zeros((n, window.shape[1], h, w))
                logits[:, :, y1:y2, x1:x2] += window
                count[:, :, y1:y2, x1:x2] += 1
        return logits / count

    def inference(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) at the batch's (padded) size, whole-image or sliding-window per ``test_cfg.mode``."""
        if self.test_cfg['mode'] == 'slide':
            return self.slide_inference(inputs)
        return self.encode_decode(inputs)

    def _to_original(self, logits: torch.Tensor, img_shape: Tuple[int, int], flips: Sequence[Optional[str]],
                     ori_shape: Tuple[int, int]) -> torch.Tensor:
        """(1, C, H, W) logits of a padded, maybe flipped input -> (C, ori_h, ori_w): padding cut, flips undone in
        reverse order, bilinear resize."""
        logits = logits[:, :, :img_shape[0], :img_shape[1]]
        for direction in reversed(flips):
            logits = _flip(logits, direction)
        if tuple(logits.shape[-2:]) != tuple(ori_shape):
            logits = F.interpolate(logits, size=tuple(ori_shape), mode='bilinear', align_corners=self.align_corners)
        return logits[0]

    def _tta_logits(self, image: torch.Tensor, sample_flip: Optional[str], ori_shape: Tuple[int, int]) -> torch.Tensor:
        """Average of the softmax probabilities of every scaled/flipped copy of ``image`` (1, 3, h, w) at
        ``ori_shape``; returned as their log, so that the softmax of the result gives the averaged probabilities."""
        h, w = image.shape[-2:]
        directions = [None, self.test_cfg['flip_direction']] if self.test_cfg['flip'] else [None]
        probs, n = 0.0, 0
        for scale in self.test_cfg['scales'] or [1.0]:
            size = (int(h * scale + 0.5), int(w * scale + 0.5))
            scaled = image if size == (h, w) else F.interpolate(image, size=size, mode='bilinear',
                                                                align_corners=False)
            for direction in directions:
                logits = self.inference(_flip(scaled, direction))
                logits = self._to_original(logits, size, [sample_flip, direction], ori_shape)
                probs = probs + logits.float().softmax(dim=0)
                n += 1
        return (probs / n).log()

    def predict(self, inputs: torch.Tensor, data_samples: Optional[List[dict]] = None) -> List[dict]:
        """One dict per image: the sample's keys (a padded ``gt_sem_seg`` cut back to ``img_shape``) plus
        ``seg_logits`` (C, ori_h, ori_w) (with TTA: the log of the averaged probabilities) and ``pred_sem_seg``
        (ori_h, ori_w) int64."""
        if data_samples is None:
            shape = tuple(inputs.shape[-2:])
            data_samples = [dict(ori_shape=shape, img_shape=shape) for _ in range(inputs.shape[0])]
        if len(data_samples) != inputs.shape[0]:
            raise ValueError(f'{type(self).__name__}.predict: {len(data_samples)} data samples for '
                             f'{inputs.shape[0]} images')
        tta = self.test_cfg['flip'] or self.test_cfg['scales'] is not None
        batch_logits = None if tta else self.inference(inputs)
        preds = []
        for i, s in enumerate(data_samples):
            img_shape = tuple(int(v) for v in s.get('img_shape', inputs.shape[-2:]))[:2]
            ori_shape = tuple(int(v) for v in s.get('ori_shape', img_shape))[:2]
            flip = (s.get('flip_direction') or 'horizontal') if s.get('flip') else None
            if flip is not None and flip not in _FLIP_DIMS:
                raise ValueError(f"{type(self).__name__}.predict: data sample {i} has flip_direction {flip!r} "
                                 f"(expected 'horizontal' or 'vertical')")
            if tta:
                image = inputs[i:i + 1, :, :img_shape[0], :img_shape[1]]
                logits = self._tta_logits(image, flip, ori_shape)
            else:
                logits = self._to_original(batch_logits[i:i + 1], img_shape, [flip], ori_shape)
            pred = dict(s, seg_logits=logits, pred_sem_seg=logits.argmax(dim=0))
            gt = s.get('gt_sem_seg')
            if gt is not None:  # at ori_shape from the test pipeline; padded only by a training-mode preprocessor
                gt = gt[0] if gt.dim() == 3 and gt.shape[0] == 1 else gt
                if 'pad_shape' in s and tuple(gt.shape) == tuple(s['pad_shape']) != img_shape:
                    gt = gt[:img_shape[0], :img_shape[1]]
                pred['gt_sem_seg'] = gt
            preds.append(pred)
        return preds
