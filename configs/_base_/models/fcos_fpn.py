# FCOS with FPN (mmdet's fcos_r50_fpn, center-sampling variant): strides 8/16/32 in, P3-P7 out (extra convs on the
# last output, ReLU between them), one point per location, GroupNorm head with centerness.
model = dict(
    type='FCOS',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           pad_size_divisor=32),
    backbone=dict(type='TimmBackbone', model_name='resnet50', out_indices=(2, 3, 4), frozen_stages=1, norm_eval=True),
    neck=dict(type='FPN', out_channels=256, start_level=0, add_extra_convs='on_output', num_outs=5,
              relu_before_extra_convs=True),
    bbox_head=dict(type='FCOSHead', num_classes=80, in_channels=256, strides=[8, 16, 32, 64, 128]),
    train_cfg=dict(center_sampling_radius=1.5),
    test_cfg=dict(nms_pre=1000, score_thr=0.05, nms_iou=0.5, max_per_img=100),
)
