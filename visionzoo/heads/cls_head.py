"""Classification heads."""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..registry import MODELS
from ..utils.options import argument_error, positive_int

__all__ = ['LinearClsHead']


@MODELS.register_module()
class LinearClsHead(nn.Module):
    """Dropout + linear classifier on pooled features, with cross-entropy (optionally label-smoothed) loss."""

    def __init__(self, num_classes: int, in_channels: Optional[int] = None, dropout: float = 0.0,
                 label_smoothing: float = 0.0):
        super().__init__()
        positive_int('LinearClsHead', 'num_classes', num_classes)
        if in_channels is None:
            raise argument_error('LinearClsHead', 'in_channels', in_channels, 'expected the feature width '
                                 '(ImageClassifier fills it in from the backbone)')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.label_smoothing = label_smoothing
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(feats))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> dict:
        return dict(loss=F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing))
