# SLAB-Swin-T Mask R-CNN 1x, as xinghaochen/SLAB detection/configs/swin/
# mask_rcnn_slab_swin_tiny_patch4_window7_mstrain_480-800_adamw_1x_coco.py (here single-scale 1333x800, not its
# 480-800 multi-scale AutoAugment): SLA windows 56/28, Swin 7/7, drop path 0.1, PRepBN over 300k steps with frozen
# BatchNorm, a LayerNorm (eps 1e-5) per output, AdamW 1e-4, wd 0.05. No box AP for SLAB-Swin in the repository.
_base_ = ['../_base_/models/mask-rcnn_fpn.py', '../_base_/datasets/coco_instance.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='slab_swin_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
        prepbn_steps=300000, out_norm=dict(type='LN', eps=1e-5), norm_eval=True,
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/slab_swin_tiny.pth
    neck=dict(in_channels=[96, 192, 384, 768]),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'relative_position_bias_table': dict(decay_mult=0.0)}))
