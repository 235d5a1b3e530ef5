"""Backbones: one file per family, each registering its models in timm on import, and the registry wrapper
that turns any timm model into a dense-prediction backbone."""
from .timm_backbone import TimmBackbone, create_timm_model
from .vim import VisionMamba  # importing vim registers vim_* in timm

__all__ = ['TimmBackbone', 'create_timm_model', 'VisionMamba']
