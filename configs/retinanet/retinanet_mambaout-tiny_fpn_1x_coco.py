# MambaOut-T RetinaNet 1x. No detection code was released; the author's recipe (yuweihao/MambaOut issue #251): Swin's
# mmdet configs, a LayerNorm on each stage output, drop path 0.3, AdamW 1e-4, wd 0.05, no layer-wise lr decay.
# The paper reports Mask R-CNN only (no RetinaNet result).
_base_ = ['../_base_/models/retinanet_fpn.py', '../_base_/datasets/coco_detection.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='mambaout_tiny', out_indices=(1, 2, 3), drop_path_rate=0.3,
        out_norm='LN',
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/mambaout_tiny.pth
    neck=dict(in_channels=[192, 384, 576]),
)
