# VAN-B2 RetinaNet 1x. The detection code was never released (VAN-Classification issues #3, #24, #29); settings from
# the released dense code (VAN-Segmentation van.py: drop path 0.1, per-stage LayerNorm already in the model,
# trainable BatchNorm) with the 1x AdamW recipe (1e-4, wd 0.05). Paper abstract: VAN-B2 48.8 AP (detector not named).
_base_ = ['../_base_/models/retinanet_fpn.py', '../_base_/datasets/coco_detection.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='van_b2', out_indices=(1, 2, 3), drop_path_rate=0.1,
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/van_base_828.pth.tar
    neck=dict(in_channels=[128, 320, 512]),
)
