# Mask R-CNN with FPN (mmdet's mask-rcnn_r50_fpn): backbone maps at strides 4-32, FPN P2-P6 (P6 by max pooling),
# RPN with 3 anchors per location, RoIAlign 7x7 (boxes) and 14x14 (masks) from P2-P5.
model = dict(
    type='MaskRCNN',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           pad_size_divisor=32),
    backbone=dict(type='TimmBackbone', model_name='resnet50', out_indices=(1, 2, 3, 4), frozen_stages=1,
                  norm_eval=True),
    neck=dict(type='FPN', out_channels=256, num_outs=5),
    rpn_head=dict(type='RPNHead', in_channels=256,
                  anchor_generator=dict(scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        type='StandardRoIHead',
        num_classes=80,
        in_channels=256,
        featmap_strides=[4, 8, 16, 32],
        with_mask=True,
        train_cfg=dict(pos_iou_thr=0.5, neg_iou_thr=0.5, num=512, pos_fraction=0.25),
        test_cfg=dict(score_thr=0.05, nms_iou=0.5, max_per_img=100)),
    train_cfg=dict(rpn=dict(pos_iou_thr=0.7, neg_iou_thr=0.3, num=256, pos_fraction=0.5),
                   rpn_proposal=dict(nms_pre=2000, max_per_img=1000, nms_iou=0.7)),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=1000, nms_iou=0.7), mask_thr_binary=0.5),
)
