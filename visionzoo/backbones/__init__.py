"""Backbones: one file per family, each registering its models in timm on import, and the registry wrapper
that turns any timm model into a dense-prediction backbone.

For the families timm already maintains (EfficientViT-M, SHViT, MambaOut) visionzoo adds what timm lacks: the
official checkpoints' layouts (``efficientvit_msra``, ``shvit``; timm's MambaOut filter already maps the official
keys), fusion, and dense-prediction use through :class:`TimmBackbone`.
"""
from . import efficientvit_msra, shvit  # noqa: F401  (official checkpoint layouts for timm's models)
from .biformer import BiFormer  # registers biformer_tiny/small/base
from .nat import NAT, DiNAT  # registers nat_mini/tiny/small/base, dinat_mini/tiny/small/base/large/large_384
from .slab import (SlabCSWinTransformer, SlabPyramidVisionTransformer, SlabSwinTransformer,  # registers the
                   SlabVisionTransformer)  # slab_deit_*, slab_pvt_tiny, slab_swin_*, slab_cswin_tiny models
from .timm_backbone import TimmBackbone, create_timm_model
from .van import VisualAttentionNetwork  # registers van_b0 ... van_b6
from .vim import VisionMamba  # importing vim registers vim_* in timm

__all__ = ['BiFormer', 'DiNAT', 'NAT', 'SlabCSWinTransformer', 'SlabPyramidVisionTransformer', 'SlabSwinTransformer',
           'SlabVisionTransformer', 'TimmBackbone', 'create_timm_model', 'VisionMamba', 'VisualAttentionNetwork']
