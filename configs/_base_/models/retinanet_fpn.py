# RetinaNet with FPN (mmdet's retinanet_r50_fpn): backbone maps at strides 8/16/32, FPN P3-P7 (two extra stride-2
# convs on the last input), 9 anchors per location, focal loss. Configs replace `backbone` (and the neck's
# in_channels, which otherwise default to the backbone's out_channels).
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           pad_size_divisor=32),
    backbone=dict(type='TimmBackbone', model_name='resnet50', out_indices=(2, 3, 4), frozen_stages=1, norm_eval=True),
    neck=dict(type='FPN', out_channels=256, start_level=0, add_extra_convs='on_input', num_outs=5),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=80,
        in_channels=256,
        anchor_generator=dict(octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                              strides=[8, 16, 32, 64, 128])),
    train_cfg=dict(pos_iou_thr=0.5, neg_iou_thr=0.4),
    test_cfg=dict(nms_pre=1000, score_thr=0.05, nms_iou=0.5, max_per_img=100),
)
