"""Semantic-segmentation transforms with mmseg 1.x names and results-dict keys, on plain numpy arrays.

A results dict starts as a :class:`~visionzoo.datasets.seg.SegDataset` record (``img_path``, ``seg_map_path``,
``reduce_zero_label``, ``label_map``, ``num_classes``, ``ignore_index``). ``LoadImageFromFile`` adds ``img`` (HWC uint8
RGB); ``LoadAnnotations`` (in ``det_transforms``; it calls :func:`load_seg_map` when the record has a
``seg_map_path``) adds ``gt_seg_map``, the (h, w) label map (uint8, or uint16 for 16-bit files). The detection
``Resize`` and ``RandomFlip`` also resize (nearest) and flip ``gt_seg_map``. This module adds mmcv's
``RandomResize``, mmseg's ``RandomCrop`` and ``PhotoMetricDistortion``, and ``PackSegInputs``; batches are
collated with ``det_collate`` (lists; the segmentor's data preprocessor pads).

Images are RGB here where mmcv works in BGR; ``PhotoMetricDistortion`` converts with ``COLOR_RGB2HSV``, which gives
the hue/saturation/value mmcv's ``bgr2hsv`` gives for the same picture stored as BGR.
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..registry import TRANSFORMS
from ..utils.errors import ConfigError, DatasetError
from .det_transforms import Resize, _pair, pack_image_and_meta

__all__ = ['read_label_map', 'load_seg_map', 'RandomResize', 'RandomCrop', 'PhotoMetricDistortion',
           'PackSegInputs']


def read_label_map(path: str) -> np.ndarray:
    """Decode a label image exactly as stored: (h, w) uint8 for 8-bit files (a palette PNG gives its indices,
    never the colours), uint16 for 16-bit files. Never rescaled, never converted to RGB.

    Raises a DatasetError naming the file when it does not decode or is not a one-channel image.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ('P', 'L'):
                return np.array(im, dtype=np.uint8)
            if mode == '1':
                return np.array(im, dtype=np.uint8)
            if mode.startswith('I;16'):
                return np.array(im).astype(np.uint16)
            if mode == 'I':
                values = np.array(im, dtype=np.int64)
                if values.size and (values.min() < 0 or values.max() > 65535):
                    raise DatasetError(f'{path}: label map values span [{values.min()}, {values.max()}] (expected '
                                       f'class ids stored in an 8- or 16-bit one-channel image)')
                return values.astype(np.uint16)
    except FileNotFoundError:
        raise DatasetError(f'{path}: label map file not found') from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f'{path}: cannot decode the label map ({type(e).__name__}: {e}); expected a readable '
                           f'one-channel PNG') from None
    raise DatasetError(f'{path}: the label map is a {mode!r} image (expected a one-channel 8- or 16-bit image of '
                       f'class ids, or a palette PNG; colour label images must be converted to class ids first)')


def load_seg_map(results: dict, reduce_zero_label: Optional[bool] = None) -> dict:
    """``results['gt_seg_map']`` from ``results['seg_map_path']``, as mmseg's ``LoadAnnotations`` makes it.

    With ``reduce_zero_label`` (``None``: the record's ``reduce_zero_label``) 0 becomes ``ignore_index`` and every
    other id ``v`` becomes ``v - 1`` (``ignore_index`` stays). Then the record's ``label_map`` (old id -> new id) is
    applied. When the record carries ``num_classes`` (as :class:`~visionzoo.datasets.seg.SegDataset` records do),
    every value must lie in ``[0, num_classes)`` or be ``ignore_index``; the map must also have the original size
    of the loaded image (``ori_shape``; the map is never resized here, also when loaded after ``Resize`` as in
    mmseg's test pipelines). Either problem raises a DatasetError naming the file.
    """
    path = results['seg_map_path']
    seg = read_label_map(path)
    image_shape = results.get('ori_shape', results['img'].shape[:2] if 'img' in results else None)
    if image_shape is not None and seg.shape != tuple(image_shape):
        h, w = image_shape
        raise DatasetError(f'{path}: the label map is {seg.shape[1]}x{seg.shape[0]} but its image '
                           f"{results.get('img_path')} is {w}x{h} (expected a label map of the image's size)")
    ignore = int(results.get('ignore_index', 255))
    if reduce_zero_label is None:
        reduce_zero_label = bool(results.get('reduce_zero_label', False))
    if reduce_zero_label:
        reduced = seg.astype(np.int64) - 1
        reduced[(seg == 0) | (seg == ignore)] = ignore
        seg = reduced.astype(seg.dtype)
    label_map = results.get('label_map')
    if label_map:
        remapped = seg.copy()
        for old, new in label_map.items():
            remapped[seg == old] = new
        seg = remapped
    num_classes = results.get('num_classes')
    if num_classes is not None:
        values = np.unique(seg)
        bad = values[(values >= num_classes) & (values != ignore)]
        if len(bad):
            after = ' after reduce_zero_label' if reduce_zero_label else ''
            raise DatasetError(f'{path}: label values {bad[:8].tolist()}{" ..." if len(bad) > 8 else ""} are out of '
                               f'range{after} (expected class ids in [0, {num_classes}) or ignore_index={ignore})')
    results['gt_seg_map'] = seg
    results['reduce_zero_label'] = bool(reduce_zero_label)
    return results


@TRANSFORMS.register_module()
class RandomResize:
    """mmcv's ``RandomResize``: draw a target scale, then resize as ``Resize(scale, keep_ratio)`` does.

    With ``ratio_range=(lo, hi)``, ``scale`` is one ``(w, h)`` pair and the target is
    ``(int(w * r), int(h * r))`` with ``r ~ U(lo, hi)``. Without it, ``scale`` is a list of two ``(w, h)`` pairs and
    each side of the target is an integer drawn uniformly between the two pairs' values (inclusive).
    """

    def __init__(self, scale, ratio_range: Optional[Sequence[float]] = None, keep_ratio: bool = True):
        if ratio_range is not None:
            self.scale = _pair(scale, 'RandomResize.scale')
            if (not isinstance(ratio_range, (list, tuple)) or len(ratio_range) != 2
                    or not 0 < float(ratio_range[0]) <= float(ratio_range[1])):
                raise ConfigError(f'RandomResize.ratio_range: expected (min_ratio, max_ratio) with 0 < min <= max, '
                                  f'got {ratio_range!r}')
            self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        else:
            if not isinstance(scale, (list, tuple)) or len(scale) != 2 or not all(
                    isinstance(s, (list, tuple)) for s in scale):
                raise ConfigError(f'RandomResize.scale: without ratio_range, expected two (width, height) pairs to '
                                  f'draw between, got {scale!r}')
            self.scale = tuple(_pair(s, 'RandomResize.scale') for s in scale)
            self.ratio_range = None
        self.keep_ratio = keep_ratio

    def _target(self) -> Tuple[int, int]:
        if self.ratio_range is not None:
            lo, hi = self.ratio_range
            ratio = np.random.random_sample() * (hi - lo) + lo
            return int(self.scale[0] * ratio), int(self.scale[1] * ratio)
        (w0, h0), (w1, h1) = self.scale
        return (int(np.random.randint(min(w0, w1), max(w0, w1) + 1)),
                int(np.random.randint(min(h0, h1), max(h0, h1) + 1)))

    def __call__(self, results: dict) -> dict:
        w, h = self._target()
        return Resize(scale=(max(w, 1), max(h, 1)), keep_ratio=self.keep_ratio)(results)

    def __repr__(self) -> str:
        return f'RandomResize(scale={self.scale}, ratio_range={self.ratio_range}, keep_ratio={self.keep_ratio})'


@TRANSFORMS.register_module()
class RandomCrop:
    """mmseg's ``RandomCrop``: a random ``crop_size = (h, w)`` window (smaller when the image is smaller; padding is
    left to the data preprocessor) of the image and ``gt_seg_map``.

    With ``cat_max_ratio < 1`` the window is redrawn up to 10 times until it holds more than one class (not counting
    ``ignore_index``) and no class covers ``cat_max_ratio`` or more of its labelled pixels; the last draw is kept.
    """

    def __init__(self, crop_size, cat_max_ratio: float = 1.0, ignore_index: int = 255):
        if isinstance(crop_size, int) and not isinstance(crop_size, bool):
            crop_size = (crop_size, crop_size)
        if (not isinstance(crop_size, (list, tuple)) or len(crop_size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in crop_size)):
            raise ConfigError(f'RandomCrop.crop_size: expected a positive int or an (height, width) pair of positive '
                              f'ints, got {crop_size!r}')
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))  # (h, w), as in mmseg
        if isinstance(cat_max_ratio, bool) or not isinstance(cat_max_ratio, (int, float)) or not 0 < cat_max_ratio <= 1:
            raise ConfigError(f'RandomCrop.cat_max_ratio: expected a ratio in (0, 1], got {cat_max_ratio!r}')
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = ignore_index

    def _window(self, h: int, w: int) -> Tuple[int, int, int, int]:
        off_h = np.random.randint(0, max(h - self.crop_size[0], 0) + 1)
        off_w = np.random.randint(0, max(w - self.crop_size[1], 0) + 1)
        return off_h, off_h + self.crop_size[0], off_w, off_w + self.crop_size[1]

    def __call__(self, results: dict) -> dict:
        h, w = results['img'].shape[:2]
        y1, y2, x1, x2 = self._window(h, w)
        if self.cat_max_ratio < 1.0:
            if 'gt_seg_map' not in results:
                raise ConfigError('pipeline: RandomCrop(cat_max_ratio < 1) needs gt_seg_map (put LoadAnnotations '
                                  'before it)')
            for _ in range(10):
                labels, counts = np.unique(results['gt_seg_map'][y1:y2, x1:x2], return_counts=True)
                counts = counts[labels != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                y1, y2, x1, x2 = self._window(h, w)
        results['img'] = np.ascontiguousarray(results['img'][y1:y2, x1:x2])
        if 'gt_seg_map' in results:
            results['gt_seg_map'] = np.ascontiguousarray(results['gt_seg_map'][y1:y2, x1:x2])
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'RandomCrop(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio}, '
                f'ignore_index={self.ignore_index})')


def _affine_u8(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


@TRANSFORMS.register_module()
class PhotoMetricDistortion:
    """mmseg's ``PhotoMetricDistortion``, each step applied with probability 1/2 (numpy's global RNG, drawn in
    mmseg's order): brightness ``+U(-brightness_delta, brightness_delta)``; contrast ``*U(contrast_range)`` either
    here or last (one coin); saturation ``*U(saturation_range)`` in HSV; hue ``+randint(-hue_delta, hue_delta)``
    (mod 180, OpenCV's 8-bit hue); each step clips to [0, 255] and truncates to uint8."""

    def __init__(self, brightness_delta: int = 32, contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5), hue_delta: int = 18):
        for name, rng in (('contrast_range', contrast_range), ('saturation_range', saturation_range)):
            if not isinstance(rng, (list, tuple)) or len(rng) != 2 or not 0 <= rng[0] <= rng[1]:
                raise ConfigError(f'PhotoMetricDistortion.{name}: expected (lower, upper) with 0 <= lower <= upper, '
                                  f'got {rng!r}')
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    def _contrast(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            return _affine_u8(img, alpha=np.random.uniform(self.contrast_lower, self.contrast_upper))
        return img

    def __call__(self, results: dict) -> dict:
        img = results['img']
        if np.random.randint(2):
            img = _affine_u8(img, beta=np.random.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = np.random.randint(2) == 1
        if contrast_first:
            img = self._contrast(img)
        if np.random.randint(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[:, :, 1] = _affine_u8(hsv[:, :, 1], alpha=np.random.uniform(self.saturation_lower,
                                                                            self.saturation_upper))
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if np.random.randint(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + np.random.randint(-self.hue_delta, self.hue_delta)) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first:
            img = self._contrast(img)
        results['img'] = img
        return results

    def __repr__(self) -> str:
        return (f'PhotoMetricDistortion(brightness_delta={self.brightness_delta}, contrast_range=('
                f'{self.contrast_lower}, {self.contrast_upper}), saturation_range=({self.saturation_lower}, '
                f'{self.saturation_upper}), hue_delta={self.hue_delta})')


@TRANSFORMS.register_module()
class PackSegInputs:
    """Results dict -> ``dict(inputs=(3, h, w) uint8 tensor, data_samples=dict)``, mmseg's ``PackSegInputs``.

    ``data_samples`` holds ``meta_keys`` (``scale_factor`` (1.0, 1.0), ``flip`` False, ``flip_direction`` None and
    ``reduce_zero_label`` False when absent; ``img_shape`` is the packed image's) and, when a label map was loaded,
    ``gt_sem_seg``, the (h, w) int64 label tensor.
    """

    DEFAULTS = dict(scale_factor=(1.0, 1.0), flip=False, flip_direction=None, reduce_zero_label=False)

    def __init__(self, meta_keys: Sequence[str] = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape',
                                                   'scale_factor', 'flip', 'flip_direction', 'reduce_zero_label')):
        self.meta_keys = tuple(meta_keys)

    def __call__(self, results: dict) -> dict:
        inputs, sample = pack_image_and_meta(results, self.meta_keys, self.DEFAULTS)
        if 'gt_seg_map' in results:
            sample['gt_sem_seg'] = torch.from_numpy(results['gt_seg_map'].astype(np.int64))
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return f'PackSegInputs(meta_keys={self.meta_keys})'
