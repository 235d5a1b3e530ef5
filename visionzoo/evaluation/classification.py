"""Top-k accuracy for classification."""
from typing import Sequence, Union

import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS
from ..utils.errors import ConfigError

__all__ = ['Accuracy', 'topk_accuracy']


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1,)) -> list:
    """Percentage of samples whose label is among the ``k`` highest scores, for each ``k``.

    ``k`` larger than the number of classes counts every sample as correct (as in mmpretrain).
    """
    maxk = min(max(topk), scores.shape[1])
    pred = scores.topk(maxk, dim=1).indices
    hit = pred.eq(labels.view(-1, 1))
    return [hit[:, :min(k, maxk)].any(dim=1).float().mean().item() * 100.0 for k in topk]


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k accuracy in percent, reported as ``accuracy/top{k}``."""

    default_prefix = 'accuracy'

    def __init__(self, topk: Union[int, Sequence[int]] = (1, 5), collect_device: str = 'cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = (topk,) if isinstance(topk, int) else tuple(topk)
        if not self.topk or any(int(k) < 1 for k in self.topk):
            raise ConfigError(f'Accuracy.topk: expected positive integers, got {topk!r}')

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append((sample['pred_score'].float().cpu(), int(sample['gt_label'])))

    def compute_metrics(self, results: list) -> dict:
        scores = torch.stack([r[0] for r in results])
        labels = torch.tensor([r[1] for r in results])
        return {f'top{k}': acc for k, acc in zip(self.topk, topk_accuracy(scores, labels, self.topk))}
