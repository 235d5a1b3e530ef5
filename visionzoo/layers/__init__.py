"""Layers shared by backbone families."""
from .neighborhood_attention import NeighborhoodAttention2D

__all__ = ['NeighborhoodAttention2D']
