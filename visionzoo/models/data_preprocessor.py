"""Batching of image inputs on the model's device: normalise, then pad to a common size (bottom/right).

``DetDataPreprocessor`` pads to a multiple of a divisor (mmdet); ``SegDataPreprocessor`` (mmseg) pads to a fixed
size or a divisor, pads the label maps with ``seg_pad_val`` while training and pads nothing at test time unless
asked.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseDataPreprocessor

from ..registry import MODELS
from ..utils.errors import ArgumentError
from ..utils.options import argument_error, merged_options, positive_int

__all__ = ['DetDataPreprocessor', 'SegDataPreprocessor']

_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)


def _round_up(value: int, divisor: Optional[int]) -> int:
    return -(-value // divisor) * divisor if divisor else value


class _ImagePreprocessor(BaseDataPreprocessor):
    """Shared part: mean/std checks, the list of (3, H, W) images, and one normalised batch padded with a value."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], non_blocking: bool):
        super().__init__(non_blocking)
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ArgumentError(f'{type(self).__name__}(mean={mean!r}, std={std!r}): expected 3 mean values and 3 '
                                f'positive std values')
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    def _images(self, data: dict) -> Tuple[List[torch.Tensor], Optional[list]]:
        data = self.cast_data(data)
        inputs, samples = data['inputs'], data.get('data_samples')
        if isinstance(inputs, torch.Tensor):
            inputs = list(inputs) if inputs.dim() == 4 else [inputs]
        if not inputs:
            raise ValueError(f'{type(self).__name__}: empty batch')
        for x in inputs:
            if x.dim() != 3 or x.shape[0] != 3:
                raise ValueError(f'{type(self).__name__}: expected (3, H, W) images, got shape {tuple(x.shape)}')
        return inputs, samples

    def _batch(self, inputs: Sequence[torch.Tensor], h: int, w: int, pad_value: float) -> torch.Tensor:
        """Normalised images in one (N, 3, h, w) batch, each at the top left, the rest ``pad_value``."""
        batch = self.mean.new_full((len(inputs), 3, h, w), pad_value)
        for i, x in enumerate(inputs):
            batch[i, :, :x.shape[1], :x.shape[2]] = (x.float() - self.mean) / self.std
        return batch


@MODELS.register_module()
class DetDataPreprocessor(_ImagePreprocessor):
    """mmdet's ``DetDataPreprocessor`` for RGB uint8 inputs.

    Takes ``dict(inputs=[CHW uint8, ...], data_samples=[dict, ...])`` (see ``det_collate``), moves it to the
    model's device, normalises each image with ``mean``/``std`` (0-255 units), pads the batch at the bottom and
    right with ``pad_value`` (after normalisation, as mmdet) to a multiple of ``pad_size_divisor`` and records
    ``batch_input_shape`` in every sample. Boxes are not touched: padding at the bottom/right keeps coordinates.
    """

    def __init__(self, mean: Sequence[float] = _IMAGENET_MEAN, std: Sequence[float] = _IMAGENET_STD,
                 pad_size_divisor: int = 32, pad_value: float = 0.0, non_blocking: bool = False):
        super().__init__(mean, std, non_blocking)
        positive_int('DetDataPreprocessor', 'pad_size_divisor', pad_size_divisor)
        self.pad_size_divisor = pad_size_divisor
        self.pad_value = float(pad_value)

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs, samples = self._images(data)
        h = _round_up(max(x.shape[-2] for x in inputs), self.pad_size_divisor)
        w = _round_up(max(x.shape[-1] for x in inputs), self.pad_size_divisor)
        batch = self._batch(inputs, h, w, self.pad_value)
        if samples is not None:
            for s in samples:
                s['batch_input_shape'] = (h, w)
        return dict(inputs=batch, data_samples=samples)


def _size_pair(owner: str, arg: str, size) -> Optional[Tuple[int, int]]:
    """None, an int or an (h, w) pair of positive ints -> None or (h, w)."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair)):
        raise argument_error(owner, arg, size, 'expected None, a positive int or an (h, w) pair of positive ints')
    return int(pair[0]), int(pair[1])


@MODELS.register_module()
class SegDataPreprocessor(_ImagePreprocessor):
    """mmseg 1.x's ``SegDataPreProcessor`` for RGB uint8 inputs (``PackSegInputs`` items batched by ``det_collate``).

    Normalises each image with ``mean``/``std`` (0-255 units; our images are RGB, as mmseg's with
    ``bgr_to_rgb=True``), then pads at the bottom and right with ``pad_val`` (after normalisation, as mmseg):

    - training: to ``size`` (h, w) (a dimension already larger stays as it is) or else to the batch's largest size
      rounded up to a multiple of ``size_divisor``; ``gt_sem_seg`` ((h, w) int64, the image's size) is padded the
      same way with ``seg_pad_val``. Where mmseg would fail to stack images of different sizes (no ``size`` and no
      ``size_divisor``, or images larger than ``size``) the batch is padded to its largest size.
    - test: padded only as ``test_cfg=dict(size=..., size_divisor=...)`` asks (mmseg's behaviour: nothing by default).
      mmseg refuses test batches of several images; here images of different sizes are padded to the largest one
      (bottom/right; the segmentor crops the padding off again). ``gt_sem_seg`` is left as it is at test time (it
      is the original image's label map there).

    Every sample gets ``img_shape`` (the image's (h, w) before padding), ``pad_shape`` and ``batch_input_shape``
    (the padded (H, W)) and ``padding_size`` ``(left, right, top, bottom)`` = ``(0, W - w, 0, H - h)``, mmseg's keys.
    """

    def __init__(self, mean: Sequence[float] = _IMAGENET_MEAN, std: Sequence[float] = _IMAGENET_STD,
                 size: Union[None, int, Sequence[int]] = None, size_divisor: Optional[int] = None,
                 pad_val: float = 0.0, seg_pad_val: int = 255, test_cfg: Optional[dict] = None,
                 non_blocking: bool = False):
        super().__init__(mean, std, non_blocking)
        name = 'SegDataPreprocessor'
        self.size = _size_pair(name, 'size', size)
        self.size_divisor = None if size_divisor is None else positive_int(name, 'size_divisor', size_divisor)
        test = merged_options(name, 'test_cfg', test_cfg, dict(size=None, size_divisor=None))
        self.test_size = _size_pair(name, 'test_cfg.size', test['size'])
        self.test_size_divisor = (None if test['size_divisor'] is None
                                  else positive_int(name, 'test_cfg.size_divisor', test['size_divisor']))
        if isinstance(seg_pad_val, bool) or not isinstance(seg_pad_val, int) or seg_pad_val < 0:
            raise argument_error(name, 'seg_pad_val', seg_pad_val, 'expected an int >= 0 (the ignored label)')
        self.pad_val = float(pad_val)
        self.seg_pad_val = seg_pad_val

    def _padded_size(self, inputs: Sequence[torch.Tensor], training: bool) -> Tuple[int, int]:
        size, divisor = (self.size, self.size_divisor) if training else (self.test_size, self.test_size_divisor)
        h, w = max(x.shape[-2] for x in inputs), max(x.shape[-1] for x in inputs)
        if size is not None:
            return max(h, size[0]), max(w, size[1])
        return _round_up(h, divisor), _round_up(w, divisor)

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs, samples = self._images(data)
        if training and samples is None:
            raise ValueError('SegDataPreprocessor: training needs data_samples with gt_sem_seg')
        h, w = self._padded_size(inputs, training)
        batch = self._batch(inputs, h, w, self.pad_val)
        for i, x in enumerate(inputs if samples is not None else ()):
            s = samples[i]
            ih, iw = x.shape[-2:]
            s.update(img_shape=(ih, iw), pad_shape=(h, w), batch_input_shape=(h, w),
                     padding_size=(0, w - iw, 0, h - ih))
            if training and 'gt_sem_seg' in s:
                seg = s['gt_sem_seg']
                seg = seg[0] if seg.dim() == 3 and seg.shape[0] == 1 else seg
                if tuple(seg.shape) != (ih, iw):
                    raise ValueError(f"SegDataPreprocessor: {s.get('img_path', f'sample {i}')}: gt_sem_seg is "
                                     f'{tuple(seg.shape)} but the image is {(ih, iw)} (expected a label map of the '
                                     f"image's size)")
                padded = seg.new_full((h, w), self.seg_pad_val)
                padded[:ih, :iw] = seg
                s['gt_sem_seg'] = padded
        return dict(inputs=batch, data_samples=samples)
