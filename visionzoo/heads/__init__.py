"""Task heads (classification now; detection and segmentation heads join here)."""
from .cls_head import LinearClsHead

__all__ = ['LinearClsHead']
