"""Assembled models built from config."""
from .classifier import ImageClassifier

__all__ = ['ImageClassifier']
