# BiFormer-S Mask R-CNN 1x, as rayleizhu/BiFormer object_detection/configs/coco/maskrcnn.1x.biformer_small.py:
# 16 routing regions per side (inputs padded to fit), drop path 0.2, a LayerNorm on each output, BatchNorm frozen,
# AdamW 1e-4, wd 0.05. Reported: 47.8 box AP / 43.2 mask AP (48.1 / 43.6 reproduced; object_detection/README.md).
_base_ = ['../_base_/models/mask-rcnn_fpn.py', '../_base_/datasets/coco_instance.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='biformer_small', out_indices=(0, 1, 2, 3), n_win=16,
        drop_path_rate=0.2, out_norm='LN', norm_eval=True,
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/biformer_small.pth
    neck=dict(in_channels=[64, 128, 256, 512]),
)
