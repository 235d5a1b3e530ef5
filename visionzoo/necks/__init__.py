"""Necks: registry-built modules that take a list of NCHW maps and return a list or tuple of NCHW maps."""
from .efficientvit_fpn import EfficientViTFPN
from .feature2pyramid import Feature2Pyramid
from .fpn import FPN, PAFPN
from .simple_fpn import SimpleFeaturePyramid

__all__ = ['EfficientViTFPN', 'Feature2Pyramid', 'FPN', 'PAFPN', 'SimpleFeaturePyramid']
