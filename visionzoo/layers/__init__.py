"""Layers shared by backbone families, and inference-time fusion for any model."""
from .fuse import fuse, register_fuser
from .neighborhood_attention import NeighborhoodAttention2D

__all__ = ['NeighborhoodAttention2D', 'fuse', 'register_fuser']
