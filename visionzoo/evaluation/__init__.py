"""Metrics."""
from .classification import Accuracy, topk_accuracy
from .dump import DumpPredictions

__all__ = ['Accuracy', 'topk_accuracy', 'DumpPredictions']
