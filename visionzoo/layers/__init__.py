"""Layers shared by backbone families, and inference-time fusion for any model (:mod:`visionzoo.layers.fuse`)."""
from . import fuse  # noqa: F401  (the module; the function is visionzoo.fuse)
from .neighborhood_attention import NeighborhoodAttention2D
from .norm_act import LAYER_TYPES, build_act, build_norm
from .pos_embed import resample_grid_tokens  # noqa: F401  (Vim and SLAB position tokens)

__all__ = ['NeighborhoodAttention2D', 'LAYER_TYPES', 'build_norm', 'build_act']
