"""Top-k accuracy for classification, with a per-class table on request."""
from typing import Sequence, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ..registry import METRICS
from ..utils.errors import ConfigError
from .iou_metric import per_class_table

__all__ = ['Accuracy', 'topk_accuracy', 'classwise_topk_accuracy']


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1,)) -> list:
    """Percentage of samples whose label is among the ``k`` highest scores, for each ``k``.

    ``k`` larger than the number of classes counts every sample as correct (as in mmpretrain).
    """
    maxk = min(max(topk), scores.shape[1])
    pred = scores.topk(maxk, dim=1).indices
    hit = pred.eq(labels.view(-1, 1))
    return [hit[:, :min(k, maxk)].any(dim=1).float().mean().item() * 100.0 for k in topk]


def classwise_topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, num_classes: int,
                            topk: Sequence[int] = (1,)) -> dict:
    """``{'top{k}': array}``: per class, the fraction (0..1) of its samples whose label is among the ``k`` highest
    scores; NaN for a class without samples."""
    maxk = min(max(topk), scores.shape[1])
    hit = scores.topk(maxk, dim=1).indices.eq(labels.view(-1, 1))
    count = torch.bincount(labels, minlength=num_classes).double()
    out = {}
    for k in topk:
        correct = torch.bincount(labels, weights=hit[:, :min(k, maxk)].any(dim=1).double(), minlength=num_classes)
        out[f'top{k}'] = (correct / count).numpy()  # 0 / 0 = NaN for a class without samples
    return out


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k accuracy in percent, reported as ``accuracy/top{k}``.

    ``classwise=True`` also logs a table with each class's top-k accuracy and number of samples (classes named by
    ``dataset_meta['classes']``; only classes with samples are listed).
    """

    default_prefix = 'accuracy'

    def __init__(self, topk: Union[int, Sequence[int]] = (1, 5), classwise: bool = False, collect_device: str = 'cpu',
                 prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = (topk,) if isinstance(topk, int) else tuple(topk)
        if not self.topk or any(int(k) < 1 for k in self.topk):
            raise ConfigError(f'Accuracy.topk: expected positive integers, got {topk!r}')
        self.classwise = classwise

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append((sample['pred_score'].float().cpu(), int(sample['gt_label'])))

    def compute_metrics(self, results: list) -> dict:
        scores = torch.stack([r[0] for r in results])
        labels = torch.tensor([r[1] for r in results])
        if self.classwise:
            MMLogger.get_current_instance().info('per class accuracy:\n' + self.classwise_table(scores, labels))
        return {f'top{k}': acc for k, acc in zip(self.topk, topk_accuracy(scores, labels, self.topk))}

    def classwise_table(self, scores: torch.Tensor, labels: torch.Tensor) -> str:
        """One row per class with samples: its name and sample count, then its top-k accuracies in percent."""
        names = list((self.dataset_meta or {}).get('classes') or range(scores.shape[1]))
        per_class = classwise_topk_accuracy(scores, labels, scores.shape[1], self.topk)
        present = np.flatnonzero(np.bincount(labels.numpy(), minlength=scores.shape[1]))
        return per_class_table([f'{names[i]} ({int((labels == i).sum())})' for i in present],
                               {k: v[present] for k, v in per_class.items()})
