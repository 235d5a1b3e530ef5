"""Task heads: classification, dense detection (RetinaNet, FCOS, RPN) and Mask R-CNN's RoI heads."""
from .cls_head import LinearClsHead
from .dense_heads import FCOSHead, RetinaHead, RPNHead
from .roi_heads import StandardRoIHead

__all__ = ['LinearClsHead', 'RetinaHead', 'FCOSHead', 'RPNHead', 'StandardRoIHead']
