"""Backbones: one file per family, each registering its models in timm on import, and the registry wrapper
that turns any timm model into a dense-prediction backbone."""
from . import vim  # noqa: F401  (registers vim_* in timm)
from .timm_backbone import TimmBackbone, create_timm_model
from .vim import VisionMamba

__all__ = ['TimmBackbone', 'create_timm_model', 'VisionMamba']
