# Vim-Ti Mask R-CNN 1x with ViTDet's simple feature pyramid, backbone as hustvl/Vim det/configs/common/models/
# mask_rcnn_vimdet.py (no class token, last block's residual stream, pos_embed laid out for 1024, drop path 0.1; no
# RoPE here). The official run is Cascade Mask R-CNN, 100 epochs LSJ 1024 (cascade_mask_rcnn_vimdet_t_100ep.py, wd 0.1,
# layer decay): 45.7 box AP / 39.2 mask AP (paper). This config: the 1x AdamW recipe (1e-4, wd 0.05).
_base_ = ['../_base_/models/mask-rcnn_fpn.py', '../_base_/datasets/coco_instance.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='vim_tiny', class_token=False, out_indices=(23,), img_size=1024,
        drop_path_rate=0.1,
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/vim_t_midclstok_76p1acc.pth
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=[192], out_channels=256,
              scale_factors=(4.0, 2.0, 1.0, 0.5), num_outs=5),  # strides 4-32, and 64 by max pooling
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.0)}))
