# EfficientViT-M4 Mask R-CNN 1x, as microsoft/Cream EfficientViT/downstream/configs/
# mask_rcnn_efficientvit_m4_fpn_1x_coco.py: strides 16/32/64, every BatchNorm frozen, EfficientViTFPN makes strides
# 4/8 with two transposed convs (P2-P6), AdamW 1e-4, wd 0.05 (none on attention_biases). Reported: 31.0 mask AP,
# box AP not listed (downstream/README.md).
_base_ = ['../_base_/models/mask-rcnn_fpn.py', '../_base_/datasets/coco_instance.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='efficientvit_m4', out_indices=(0, 1, 2), norm_eval=True,
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/efficientvit_m4.pth
    neck=dict(type='EfficientViTFPN', in_channels=[128, 256, 384], num_extra_trans_convs=2),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'attention_biases': dict(decay_mult=0.0)}))
