"""Assembled models built from config."""
from .classifier import ImageClassifier, create_timm_model

__all__ = ['ImageClassifier', 'create_timm_model']
