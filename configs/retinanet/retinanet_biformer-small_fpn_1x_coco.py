# BiFormer-S RetinaNet 1x, as rayleizhu/BiFormer object_detection/configs/coco/retinanet.1x.biformer_small.py:
# 16 routing regions per side (inputs padded to fit), drop path 0.2, a LayerNorm on each output, BatchNorm frozen;
# that config's optimizer (WaveViT's): AdamW 1e-4, weight decay 1e-4. Reported: 45.9 AP (47.3 reproduced).
_base_ = ['../_base_/models/retinanet_fpn.py', '../_base_/datasets/coco_detection.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='biformer_small', out_indices=(1, 2, 3), n_win=16,
        drop_path_rate=0.2, out_norm='LN', norm_eval=True,
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/biformer_small.pth
    neck=dict(in_channels=[128, 256, 512]),
)
optim_wrapper = dict(optimizer=dict(weight_decay=1e-4))
