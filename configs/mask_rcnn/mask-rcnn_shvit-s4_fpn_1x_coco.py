# SHViT-S4 Mask R-CNN 1x, as ysj9909/SHViT downstream/configs/mask_rcnn_shvit_s4_fpn_1x_coco.py: strides 16/32/64,
# every BatchNorm frozen, EfficientViTFPN with two transposed convs (P2-P6), AdamW 1e-4, wd 0.05.
# Reported: 39.0 box AP / 35.9 mask AP (downstream/README.md).
_base_ = ['../_base_/models/mask-rcnn_fpn.py', '../_base_/datasets/coco_instance.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='shvit_s4', out_indices=(0, 1, 2), norm_eval=True,
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/shvit_s4.pth
    neck=dict(type='EfficientViTFPN', in_channels=[224, 336, 448], num_extra_trans_convs=2),
)
