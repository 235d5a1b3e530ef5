"""Batching of detection inputs on the model's device: normalise, then pad to a common, divisible size."""
from typing import Sequence

import torch
from mmengine.model import BaseDataPreprocessor

from ..registry import MODELS
from ..utils.errors import ArgumentError
from ..utils.options import positive_int

__all__ = ['DetDataPreprocessor']


@MODELS.register_module()
class DetDataPreprocessor(BaseDataPreprocessor):
    """mmdet's ``DetDataPreprocessor`` for RGB uint8 inputs.

    Takes ``dict(inputs=[CHW uint8, ...], data_samples=[dict, ...])`` (see ``det_collate``), moves it to the
    model's device, normalises each image with ``mean``/``std`` (0-255 units), pads the batch at the bottom and
    right with ``pad_value`` (after normalisation, as mmdet) to a multiple of ``pad_size_divisor`` and records
    ``batch_input_shape`` in every sample. Boxes are not touched: padding at the bottom/right keeps coordinates.
    """

    def __init__(self, mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375), pad_size_divisor: int = 32, pad_value: float = 0.0,
                 non_blocking: bool = False):
        super().__init__(non_blocking)
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ArgumentError(f'DetDataPreprocessor(mean={mean!r}, std={std!r}): expected 3 mean values and 3 '
                                f'positive std values')
        positive_int('DetDataPreprocessor', 'pad_size_divisor', pad_size_divisor)
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.pad_size_divisor = pad_size_divisor
        self.pad_value = float(pad_value)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs, samples = data['inputs'], data.get('data_samples')
        if isinstance(inputs, torch.Tensor):
            inputs = list(inputs) if inputs.dim() == 4 else [inputs]
        if not inputs:
            raise ValueError('DetDataPreprocessor: empty batch')
        d = self.pad_size_divisor
        h = -(-max(x.shape[-2] for x in inputs) // d) * d
        w = -(-max(x.shape[-1] for x in inputs) // d) * d
        batch = self.mean.new_full((len(inputs), 3, h, w), self.pad_value)
        for i, x in enumerate(inputs):
            if x.dim() != 3 or x.shape[0] != 3:
                raise ValueError(f'DetDataPreprocessor: expected (3, H, W) images, got shape {tuple(x.shape)}')
            batch[i, :, :x.shape[1], :x.shape[2]] = (x.float() - self.mean) / self.std
        if samples is not None:
            for s in samples:
                s['batch_input_shape'] = (h, w)
        return dict(inputs=batch, data_samples=samples)
