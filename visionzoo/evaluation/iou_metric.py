"""Semantic-segmentation metrics (mmseg 1.x ``IoUMetric``: aAcc, mIoU, mAcc, mDice, mFscore, ...).

Each predicted image adds its per-class pixel counts (intersection, union, predicted, labelled) to one running
``(4, num_classes)`` int64 histogram, so the metric's state has the same size after 10 images as after 10,000 (no
label maps are kept) and the counts are exact. mmseg sums float32 ``torch.histc`` counts per image instead, which
can round at the last digit of very large totals; the reported numbers (percent, 2 decimals) are otherwise the same.
"""
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ..registry import METRICS
from ..utils.errors import ConfigError

__all__ = ['IoUMetric', 'area_histogram', 'histogram_to_metrics', 'per_class_table']

ALLOWED = ('mIoU', 'mDice', 'mFscore')


def area_histogram(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """``(4, num_classes)`` int64 pixel counts of one image: rows intersection, union, prediction, label.

    Pixels whose label is ``ignore_index`` are left out; predicted or labelled values outside ``[0, num_classes)``
    count for no class (as ``torch.histc`` in mmseg drops them).
    """
    keep = label != ignore_index
    pred = pred[keep].long()
    label = label[keep].long()

    def counts(v: torch.Tensor) -> torch.Tensor:
        v = v[(v >= 0) & (v < num_classes)]
        return torch.bincount(v, minlength=num_classes)

    inter = counts(pred[pred == label])
    area_pred = counts(pred)
    area_label = counts(label)
    return torch.stack([inter, area_pred + area_label - inter, area_pred, area_label])


def histogram_to_metrics(hist: np.ndarray, metrics: Sequence[str] = ('mIoU',), nan_to_num: Optional[float] = None,
                         beta: float = 1) -> Dict[str, np.ndarray]:
    """Per-class fractions of mmseg's ``total_area_to_metrics`` from a ``(4, C)`` histogram: ``aAcc`` (a scalar),
    then ``IoU``/``Acc`` (mIoU), ``Dice``/``Acc`` (mDice), ``Fscore``/``Precision``/``Recall`` (mFscore). 0/0 gives
    NaN (a class absent from labels and predictions), replaced by ``nan_to_num`` when given."""
    inter, union, area_pred, area_label = np.asarray(hist, dtype=np.float64)
    out = {}
    with np.errstate(divide='ignore', invalid='ignore'):
        out['aAcc'] = inter.sum() / area_label.sum()
        for metric in metrics:
            if metric == 'mIoU':
                out['IoU'] = inter / union
                out['Acc'] = inter / area_label
            elif metric == 'mDice':
                out['Dice'] = 2 * inter / (area_pred + area_label)
                out['Acc'] = inter / area_label
            elif metric == 'mFscore':
                precision, recall = inter / area_pred, inter / area_label
                out['Fscore'] = (1 + beta ** 2) * precision * recall / (beta ** 2 * precision + recall)
                out['Precision'] = precision
                out['Recall'] = recall
    if nan_to_num is not None:
        out = {k: np.nan_to_num(v, nan=nan_to_num) for k, v in out.items()}
    return out


def per_class_table(class_names: Sequence[str], columns: Dict[str, np.ndarray]) -> str:
    """A plain-text table, one row per class: its name, then each column's value in percent (``nan`` for a class
    absent from labels and predictions)."""
    header = ['Class', *columns]
    rows = [[str(name), *(f'{v:.2f}' for v in values)]
            for name, *values in zip(class_names, *(np.round(c * 100, 2) for c in columns.values()))]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    rule = '+'.join(['', *('-' * (w + 2) for w in widths), ''])

    def line(cells):
        return '|'.join(['', *(f' {c:^{w}} ' for c, w in zip(cells, widths)), ''])

    return '\n'.join([rule, line(header), rule, *(line(r) for r in rows), rule])


@METRICS.register_module()
class IoUMetric(BaseMetric):
    """Pixel accuracy and per-class IoU / Dice / F-score, mmseg 1.x's ``IoUMetric``.

    ``process`` reads, from each predicted sample dict, ``pred_sem_seg`` and ``gt_sem_seg`` ((H, W) integer
    tensors at the same, original size; a leading dimension of 1 or a ``dict(data=...)`` wrapper, as mmseg's
    ``PixelData``, is accepted). ``compute_metrics`` returns mmseg's keys, in percent rounded to 2 decimals:
    ``aAcc``, then ``mIoU``, ``mAcc`` (for 'mIoU'), ``mDice`` (and ``mAcc``), ``mFscore``, ``mPrecision``,
    ``mRecall``, each the mean over classes of the per-class value, NaN classes (absent from both labels and
    predictions, or 0/0 for that value) left out of the mean; and logs the per-class table.

    Args:
        ignore_index: label value left out of the counts; ``None`` takes the dataset's (``dataset_meta``), else 255.
        iou_metrics: some of ``'mIoU'``, ``'mDice'``, ``'mFscore'``.
        nan_to_num: replace per-class NaNs with this value before averaging (mmseg's option).
        beta: weight of recall in the F-score.
    """

    default_prefix = None

    def __init__(self, ignore_index: Optional[int] = None, iou_metrics: Sequence[str] = ('mIoU',),
                 nan_to_num: Optional[float] = None, beta: float = 1, collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        metrics = [iou_metrics] if isinstance(iou_metrics, str) else list(iou_metrics)
        if not metrics or any(m not in ALLOWED for m in metrics):
            raise ConfigError(f'IoUMetric.iou_metrics: expected some of {list(ALLOWED)}, got {iou_metrics!r}')
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ConfigError(f'IoUMetric.ignore_index: expected an int or None, got {ignore_index!r}')
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0:
            raise ConfigError(f'IoUMetric.beta: expected a positive number, got {beta!r}')
        self.metrics = metrics
        self.ignore_index = ignore_index
        self.nan_to_num = nan_to_num
        self.beta = beta

    def _classes(self) -> Sequence[str]:
        classes = (self.dataset_meta or {}).get('classes')
        if not classes:
            raise ConfigError("IoUMetric: dataset_meta has no 'classes' (evaluate a segmentation dataset, or set "
                              'metric.dataset_meta = dict(classes=...))')
        return classes

    def _ignore_index(self) -> int:
        if self.ignore_index is not None:
            return self.ignore_index
        return int((self.dataset_meta or {}).get('ignore_index', 255))

    @staticmethod
    def _map(sample: dict, key: str) -> torch.Tensor:
        if key not in sample:
            raise ConfigError(f"IoUMetric: a predicted sample has no {key!r} (expected 'pred_sem_seg' and "
                              f"'gt_sem_seg' label maps in the segmentor's outputs)")
        value = sample[key]
        if isinstance(value, dict):
            value = value['data']
        value = torch.as_tensor(value)
        while value.dim() > 2 and value.shape[0] == 1:
            value = value[0]
        return value

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        num_classes = len(self._classes())
        ignore = self._ignore_index()
        hist = torch.zeros(4, num_classes, dtype=torch.int64)
        for sample in data_samples:
            pred, label = self._map(sample, 'pred_sem_seg'), self._map(sample, 'gt_sem_seg')
            if pred.shape != label.shape:
                raise ConfigError(f"IoUMetric: prediction {tuple(pred.shape)} and label {tuple(label.shape)} of "
                                  f"{sample.get('img_path', 'an image')} differ in size (expected both at the "
                                  f"original image size)")
            hist += area_histogram(pred, label.to(pred.device), num_classes, ignore).cpu()
        # one running histogram per process: the state does not grow with the number of images
        if self.results:
            self.results[0] += hist
        else:
            self.results.append(hist)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        classes = self._classes()
        hist = sum(r.to(torch.int64) for r in results).numpy()  # one histogram per process after collection
        per_class = histogram_to_metrics(hist, self.metrics, self.nan_to_num, self.beta)
        out = {}
        for key, value in per_class.items():
            with np.errstate(invalid='ignore'):
                mean = np.nanmean(value) if np.any(~np.isnan(value)) else np.nan
            out[key if key == 'aAcc' else 'm' + key] = float(np.round(mean * 100, 2))
        per_class.pop('aAcc')
        logger = MMLogger.get_current_instance()
        logger.info('per class results:\n' + per_class_table(classes, per_class))
        return out
