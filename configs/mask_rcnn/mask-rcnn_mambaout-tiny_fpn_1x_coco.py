# MambaOut-T Mask R-CNN 1x. No detection code was released; the author's recipe (yuweihao/MambaOut issue #251): Swin's
# mmdet configs, a LayerNorm on each stage output, drop path 0.3, AdamW 1e-4, wd 0.05, no layer-wise lr decay.
# Reported (paper arXiv:2405.07992, not re-checked here): 45.1 box AP / 41.0 mask AP.
_base_ = ['../_base_/models/mask-rcnn_fpn.py', '../_base_/datasets/coco_instance.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='mambaout_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.3,
        out_norm='LN',
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/mambaout_tiny.pth
    neck=dict(in_channels=[96, 192, 384, 576]),
)
