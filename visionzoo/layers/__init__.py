"""Layers shared by backbone families, and inference-time fusion for any model (:mod:`visionzoo.layers.fuse`)."""
from . import fuse  # noqa: F401  (the module; the function is visionzoo.fuse)
from .neighborhood_attention import NeighborhoodAttention2D

__all__ = ['NeighborhoodAttention2D']
