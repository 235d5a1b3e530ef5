"""Backbones: one file per family, each registering its models in timm on import."""
from . import vim  # noqa: F401
from .vim import VisionMamba

__all__ = ['VisionMamba']
