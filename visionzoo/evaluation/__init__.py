"""Metrics: top-k accuracy, COCO bbox/segm, semantic-segmentation IoU, and prediction dumping."""
from .classification import Accuracy, topk_accuracy
from .coco import CocoMetric, coco_results
from .dump import DumpPredictions
from .iou_metric import IoUMetric

__all__ = ['Accuracy', 'topk_accuracy', 'CocoMetric', 'coco_results', 'DumpPredictions', 'IoUMetric']
