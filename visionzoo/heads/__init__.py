"""Task heads: classification, dense detection (RetinaNet, FCOS, RPN), Mask R-CNN's RoI heads and the decode heads
of semantic segmentation (UPerHead, FPNHead, FCNHead) with their loss."""
from .cls_head import LinearClsHead
from .dense_heads import FCOSHead, RetinaHead, RPNHead
from .losses import CrossEntropyLoss
from .roi_heads import StandardRoIHead
from .seg_heads import BaseDecodeHead, FCNHead, FPNHead, UPerHead

__all__ = ['LinearClsHead', 'RetinaHead', 'FCOSHead', 'RPNHead', 'StandardRoIHead', 'BaseDecodeHead', 'UPerHead',
           'FPNHead', 'FCNHead', 'CrossEntropyLoss']
