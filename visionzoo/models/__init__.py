"""Assembled models built from config."""
from .classifier import ImageClassifier
from .data_preprocessor import DetDataPreprocessor, SegDataPreprocessor
from .detectors import FCOS, BaseDetector, MaskRCNN, RetinaNet
from .segmentors import EncoderDecoder

__all__ = ['ImageClassifier', 'DetDataPreprocessor', 'SegDataPreprocessor', 'BaseDetector', 'RetinaNet', 'FCOS',
           'MaskRCNN', 'EncoderDecoder']
