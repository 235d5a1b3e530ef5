# NAT-Tiny RetinaNet 1x. The official code has Mask R-CNN and Cascade Mask R-CNN configs only; the backbone settings
# are those of SHI-Labs/Neighborhood-Attention-Transformer detection/configs/nat/mask_rcnn_nat_tiny_3x_coco.py (drop
# path 0.2, a LayerNorm, eps 1e-5, on each output), AdamW 1e-4, wd 0.05, no decay on rpb. No RetinaNet result
# reported.
_base_ = ['../_base_/models/retinanet_fpn.py', '../_base_/datasets/coco_detection.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='nat_tiny', out_indices=(1, 2, 3), drop_path_rate=0.2,
        out_norm=dict(type='LN', eps=1e-5),
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/nat_tiny.pth
    neck=dict(in_channels=[128, 256, 512]),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'rpb': dict(decay_mult=0.0)}))
