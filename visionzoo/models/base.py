"""What every assembled dense model shares: backbone -> optional neck, and mmengine's ``forward(mode=...)`` switch."""
from typing import List, Optional

import torch
from mmengine.model import BaseModel

from ..layers.norm_act import single_value_batchnorm_uses_running_stats
from ..registry import MODELS

__all__ = ['BackboneModel']


class BackboneModel(BaseModel):
    """Backbone + optional neck, ``extract_feat`` and ``forward(inputs, data_samples, mode)``.

    Subclasses (detectors, segmentors) build their heads and implement ``loss``, ``predict`` and ``_forward``.
    Training uses mmengine's ``train_step``; NaN/inf losses are refused by the optimizer wrapper the tools use
    (``optim_wrapper.nonfinite_loss``, :mod:`visionzoo.engine.optim`), for every model type and under DDP. A
    BatchNorm that sees one value per channel in training (one image with a 1x1 map) uses its running statistics
    for that step (:func:`~visionzoo.layers.norm_act.single_value_batchnorm_uses_running_stats`).

    Args:
        backbone: backbone config (e.g. ``dict(type='TimmBackbone', model_name='van_b0', out_indices=(1, 2, 3))``).
        neck: neck config; ``in_channels`` defaults to the backbone's ``out_channels``.
        data_preprocessor: the data preprocessor config (the subclass gives its default).
    """

    def __init__(self, backbone: dict, neck: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        preprocessor = MODELS.build(data_preprocessor) if data_preprocessor is not None else None
        super().__init__(data_preprocessor=preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = None
        if neck is not None:
            neck = dict(neck)
            if 'in_channels' not in neck and hasattr(self.backbone, 'out_channels'):
                neck['in_channels'] = list(self.backbone.out_channels)
            self.neck = MODELS.build(neck)

    def extract_feat(self, inputs: torch.Tensor) -> List[torch.Tensor]:
        feats = self.backbone(inputs)
        if self.neck is not None:
            feats = self.neck(feats)
        return list(feats)

    def forward(self, inputs: torch.Tensor, data_samples: Optional[List[dict]] = None, mode: str = 'tensor'):
        if mode == 'loss':
            # a batch of one small image: 1x1 maps in the deepest levels
            single_value_batchnorm_uses_running_stats(self)
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            if self.training:
                raise RuntimeError("mode='predict' needs the model in eval mode (model.eval())")
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._forward(inputs)
        raise ValueError(f"mode: expected 'loss', 'predict' or 'tensor', got {mode!r}")
