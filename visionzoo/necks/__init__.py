"""Necks: registry-built modules that take a list of NCHW maps and return a list of NCHW maps."""
from .simple_fpn import SimpleFeaturePyramid

__all__ = ['SimpleFeaturePyramid']
