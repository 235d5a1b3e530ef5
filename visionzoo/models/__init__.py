"""Assembled models built from config."""
from .classifier import ImageClassifier
from .data_preprocessor import DetDataPreprocessor
from .detectors import FCOS, BaseDetector, MaskRCNN, RetinaNet

__all__ = ['ImageClassifier', 'DetDataPreprocessor', 'BaseDetector', 'RetinaNet', 'FCOS', 'MaskRCNN']
