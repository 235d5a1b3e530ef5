# Vim-Ti RetinaNet 1x with ViTDet's simple feature pyramid at strides 8-32 (64, 128 by max pooling), backbone as
# hustvl/Vim det/configs/common/models/mask_rcnn_vimdet.py (no class token, last block's residual stream, pos_embed
# laid out for 1024, drop path 0.1; no RoPE here). The official code has no RetinaNet (its Cascade Mask R-CNN 100-epoch
# run: 45.7 box AP). This config: the 1x AdamW recipe (1e-4, wd 0.05).
_base_ = ['../_base_/models/retinanet_fpn.py', '../_base_/datasets/coco_detection.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='vim_tiny', class_token=False, out_indices=(23,), img_size=1024,
        drop_path_rate=0.1,
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/vim_t_midclstok_76p1acc.pth
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=[192], out_channels=256,
              scale_factors=(2.0, 1.0, 0.5), num_outs=5),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.0)}))
