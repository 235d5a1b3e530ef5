"""Metrics: top-k accuracy, COCO bbox/segm, and prediction dumping."""
from .classification import Accuracy, topk_accuracy
from .coco import CocoMetric, coco_results
from .dump import DumpPredictions

__all__ = ['Accuracy', 'topk_accuracy', 'CocoMetric', 'coco_results', 'DumpPredictions']
