"""Detection transforms with mmdet's names and results-dict keys, on plain numpy arrays, and ``det_collate``.

A results dict starts as a ``CocoDataset`` record and gains ``img`` (HWC uint8 RGB), ``img_shape``/``ori_shape``
(h, w), ``scale_factor`` (w_scale, h_scale), ``flip``/``flip_direction``, ``gt_bboxes`` ((N, 4) float32 xyxy),
``gt_bboxes_labels`` ((N,) int64), ``gt_ignore_flags`` ((N,) bool) and ``gt_masks`` ((N, h, w) uint8).
``PackDetInputs`` turns it into one dataset item ``dict(inputs=CHW uint8 tensor, data_samples=dict)``.
"""
import warnings
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..registry import FUNCTIONS, TRANSFORMS
from ..utils.errors import ConfigError, DatasetError
from .image_io import read_rgb8

__all__ = ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomFlip', 'PackDetInputs', 'det_collate',
           'pack_image_and_meta']


@TRANSFORMS.register_module()
class LoadImageFromFile:
    """Decode ``results['img_path']`` to an RGB uint8 array, with the EXIF orientation applied (as OpenCV's
    ``imread`` does for mmcv); 16-bit and float images are scaled to 8 bit by
    :func:`~visionzoo.datasets.image_io.read_rgb8`. A file that does not decode, or whose size differs from the
    record's ``height``/``width``, raises a DatasetError naming the file and the image id.
    """

    def __call__(self, results: dict) -> dict:
        path = results['img_path']
        where = f"{path} (image id {results.get('img_id')})"
        try:
            img = np.asarray(read_rgb8(path, exif_transpose=True))
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DatasetError(f'{where}: cannot decode the image ({type(e).__name__}: {e}); expected a readable '
                               f'image file') from None
        h, w = img.shape[:2]
        if 'height' in results and (h, w) != (results['height'], results['width']):
            raise DatasetError(f"{where}: the image is {w}x{h} but the annotation file says "
                               f"{results['width']}x{results['height']} (expected the annotated size)")
        results['img'] = img
        results['img_shape'] = (h, w)
        results['ori_shape'] = (h, w)
        return results

    def __repr__(self) -> str:
        return 'LoadImageFromFile()'


def _decode_mask(segm, h: int, w: int) -> Optional[np.ndarray]:
    """COCO polygons / RLE -> (h, w) uint8 with pycocotools; None when no polygon has 3 or more points."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        polygons = [p for p in segm if len(p) >= 6 and len(p) % 2 == 0]
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
    elif isinstance(segm['counts'], list):  # uncompressed RLE (crowd regions)
        rle = mask_utils.frPyObjects(segm, h, w)
    else:
        rle = segm
    with warnings.catch_warnings():
        # pycocotools' decode passes copy=False to np.array (a numpy 2 DeprecationWarning); the result is right
        warnings.filterwarnings('ignore', message='__array__ implementation', category=DeprecationWarning)
        return mask_utils.decode(rle)


@TRANSFORMS.register_module()
class LoadAnnotations:
    """Instance annotations of the record: labels and ignore flags always, boxes with ``with_bbox``, masks decoded
    at the original image size with ``with_mask``; and, when the record has a ``seg_map_path`` (a segmentation
    record), the semantic label map ``gt_seg_map`` (see :func:`~visionzoo.datasets.seg_transforms.load_seg_map`;
    ``reduce_zero_label=None`` takes the record's). A segmentation record without ``instances`` gets no box keys,
    and its label map may be loaded after ``Resize`` (mmseg's test pipelines do: the label stays at original size).

    As in mmdet, an instance whose polygons all have fewer than 3 points becomes ignored (``gt_ignore_flags``).
    An instance without any segmentation while ``with_mask=True`` raises a DatasetError.
    """

    def __init__(self, with_bbox: bool = True, with_mask: bool = False, reduce_zero_label: Optional[bool] = None):
        self.with_bbox = with_bbox
        self.with_mask = with_mask
        self.reduce_zero_label = reduce_zero_label

    def __call__(self, results: dict) -> dict:
        if 'seg_map_path' in results:
            from .seg_transforms import load_seg_map  # seg_transforms builds on this module
            load_seg_map(results, self.reduce_zero_label)
            if 'instances' not in results:
                return results
        if 'scale_factor' in results:
            raise ConfigError('pipeline: LoadAnnotations must come before Resize (annotations are in original '
                              'image pixels)')
        instances = results.get('instances', [])
        if self.with_bbox:
            results['gt_bboxes'] = np.array([i['bbox'] for i in instances], dtype=np.float32).reshape(-1, 4)
        results['gt_bboxes_labels'] = np.array([i['bbox_label'] for i in instances], dtype=np.int64)
        ignore = np.array([bool(i['ignore_flag']) for i in instances], dtype=bool)
        if self.with_mask:
            h, w = results['height'], results['width']
            masks = []
            for k, inst in enumerate(instances):
                if inst.get('mask') is None:
                    raise DatasetError(f"{results['img_path']} (image id {results.get('img_id')}): annotation id "
                                       f"{inst.get('ann_id')} has no segmentation (expected polygons or RLE for every "
                                       f"instance with LoadAnnotations(with_mask=True))")
                mask = _decode_mask(inst['mask'], h, w)
                if mask is None:
                    ignore[k] = True
                    mask = np.zeros((h, w), np.uint8)
                masks.append(mask)
            results['gt_masks'] = np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)
        results['gt_ignore_flags'] = ignore
        return results

    def __repr__(self) -> str:
        return (f'LoadAnnotations(with_bbox={self.with_bbox}, with_mask={self.with_mask}, '
                f'reduce_zero_label={self.reduce_zero_label})')


def _pair(value, name: str) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f'{name}: expected a positive int or a (width, height) pair of positive ints, got {value!r}')
    return int(value[0]), int(value[1])


@TRANSFORMS.register_module()
class Resize:
    """Resize the image, boxes and masks (mmdet's ``Resize``).

    With ``keep_ratio`` the image is scaled by ``min(max(scale) / long_side, min(scale) / short_side)`` (so
    ``(1333, 800)`` means long side <= 1333 and short side <= 800), new sizes rounded as mmcv's ``rescale_size``
    (``int(w * s + 0.5)``); otherwise it is resized to exactly ``scale = (width, height)``. ``scale_factor`` is
    ``(new_w / old_w, new_h / old_h)``, multiplied into an earlier resize's factor. Boxes are scaled and clipped to
    the new image; masks and the semantic label map ``gt_seg_map`` are resized with nearest-neighbour interpolation.
    """

    def __init__(self, scale=(1333, 800), keep_ratio: bool = True):
        self.scale = _pair(scale, 'Resize.scale')
        self.keep_ratio = keep_ratio

    def _new_size(self, w: int, h: int) -> Tuple[int, int]:
        if not self.keep_ratio:
            return self.scale
        s = min(max(self.scale) / max(h, w), min(self.scale) / min(h, w))
        return int(w * s + 0.5), int(h * s + 0.5)

    def __call__(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        new_w, new_h = self._new_size(w, h)
        sx, sy = new_w / w, new_h / h
        if (new_w, new_h) != (w, h):
            results['img'] = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        old_sx, old_sy = results.get('scale_factor', (1.0, 1.0))
        results['scale_factor'] = (old_sx * sx, old_sy * sy)
        results['img_shape'] = (new_h, new_w)
        if 'gt_bboxes' in results:
            boxes = results['gt_bboxes'] * np.array([sx, sy, sx, sy], dtype=np.float32)
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, new_w)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, new_h)
            results['gt_bboxes'] = boxes
        if 'gt_masks' in results:
            masks = results['gt_masks']
            resized = [cv2.resize(m, (new_w, new_h), interpolation=cv2.INTER_NEAREST) for m in masks]
            results['gt_masks'] = np.stack(resized) if resized else np.zeros((0, new_h, new_w), np.uint8)
        if 'gt_seg_map' in results and (new_w, new_h) != (w, h):
            results['gt_seg_map'] = cv2.resize(results['gt_seg_map'], (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        return results

    def __repr__(self) -> str:
        return f'Resize(scale={self.scale}, keep_ratio={self.keep_ratio})'


@TRANSFORMS.register_module()
class RandomFlip:
    """Flip image, boxes, masks and ``gt_seg_map`` with probability ``prob`` along ``direction`` ('horizontal' or
    'vertical')."""

    def __init__(self, prob: float = 0.5, direction: str = 'horizontal'):
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
            raise ConfigError(f'RandomFlip.prob: expected a probability in [0, 1], got {prob!r}')
        if direction not in ('horizontal', 'vertical'):
            raise ConfigError(f"RandomFlip.direction: expected 'horizontal' or 'vertical', got {direction!r}")
        self.prob = float(prob)
        self.direction = direction

    def __call__(self, results: dict) -> dict:
        flip = bool(np.random.rand() < self.prob)
        results['flip'] = flip
        results['flip_direction'] = self.direction if flip else None
        if not flip:
            return results
        horizontal = self.direction == 'horizontal'
        h, w = results['img'].shape[:2]
        results['img'] = np.ascontiguousarray(results['img'][:, ::-1] if horizontal else results['img'][::-1])
        if 'gt_bboxes' in results:
            boxes = results['gt_bboxes'].copy()
            if horizontal:
                boxes[:, 0], boxes[:, 2] = w - results['gt_bboxes'][:, 2], w - results['gt_bboxes'][:, 0]
            else:
                boxes[:, 1], boxes[:, 3] = h - results['gt_bboxes'][:, 3], h - results['gt_bboxes'][:, 1]
            results['gt_bboxes'] = boxes
        if 'gt_masks' in results:
            masks = results['gt_masks']
            results['gt_masks'] = np.ascontiguousarray(masks[:, :, ::-1] if horizontal else masks[:, ::-1])
        if 'gt_seg_map' in results:
            seg = results['gt_seg_map']
            results['gt_seg_map'] = np.ascontiguousarray(seg[:, ::-1] if horizontal else seg[::-1])
        return results

    def __repr__(self) -> str:
        return f'RandomFlip(prob={self.prob}, direction={self.direction!r})'


def pack_image_and_meta(results: dict, meta_keys: Sequence[str], defaults: dict) -> Tuple[torch.Tensor, dict]:
    """The image as a (3, h, w) uint8 tensor and the ``meta_keys`` of ``results`` (``defaults[key]`` for absent
    ones that have a default; ``img_shape`` always the image's): what every ``Pack*Inputs`` transform starts with."""
    img = results['img']
    inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    sample = {}
    for key in meta_keys:
        if key in results:
            sample[key] = results[key]
        elif key in defaults:
            sample[key] = defaults[key]
    if 'img_shape' in meta_keys:
        sample['img_shape'] = tuple(img.shape[:2])
    return inputs, sample


@TRANSFORMS.register_module()
class PackDetInputs:
    """Results dict -> ``dict(inputs=(3, h, w) uint8 tensor, data_samples=dict)``.

    ``data_samples`` holds ``meta_keys`` (``scale_factor`` (1.0, 1.0), ``flip`` False and ``flip_direction`` None
    when no transform set them; ``img_shape`` is always the packed image's) and, when annotations were loaded,
    ``gt_bboxes`` (N, 4) float32, ``gt_labels`` (N,) int64, ``gt_masks`` (N, h, w) uint8 and ``ignored_bboxes``
    (M, 4) float32: ignored (crowd) instances are kept out of the ground truth and only their boxes are packed.
    """

    DEFAULTS = dict(scale_factor=(1.0, 1.0), flip=False, flip_direction=None)

    def __init__(self, meta_keys: Sequence[str] = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                                                   'flip', 'flip_direction')):
        self.meta_keys = tuple(meta_keys)

    def __call__(self, results: dict) -> dict:
        inputs, sample = pack_image_and_meta(results, self.meta_keys, self.DEFAULTS)
        n = len(results['gt_bboxes_labels'] if 'gt_bboxes_labels' in results else results.get('gt_bboxes', ()))
        ignore = results.get('gt_ignore_flags', np.zeros(n, dtype=bool))
        keep = ~ignore
        if 'gt_bboxes' in results:
            boxes = results['gt_bboxes']
            sample['gt_bboxes'] = torch.from_numpy(boxes[keep].astype(np.float32))
            sample['ignored_bboxes'] = torch.from_numpy(boxes[ignore].astype(np.float32))
        if 'gt_bboxes_labels' in results:
            sample['gt_labels'] = torch.from_numpy(results['gt_bboxes_labels'][keep].astype(np.int64))
        if 'gt_masks' in results:
            sample['gt_masks'] = torch.from_numpy(np.ascontiguousarray(results['gt_masks'][keep], dtype=np.uint8))
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return f'PackDetInputs(meta_keys={self.meta_keys})'


@FUNCTIONS.register_module()
def det_collate(data_batch: List[dict]) -> dict:
    """Batch of ``PackDetInputs`` items -> ``dict(inputs=[tensor, ...], data_samples=[dict, ...])`` (not stacked:
    images differ in size; ``DetDataPreprocessor`` pads them)."""
    return dict(inputs=[d['inputs'] for d in data_batch], data_samples=[d['data_samples'] for d in data_batch])
