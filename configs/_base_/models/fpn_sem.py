# Semantic FPN (mmseg's fpn_r50.py, Kirillov et al. 2019): FPN neck (256 channels, 4 outputs) on four backbone maps at
# strides 4/8/16/32, FPNHead summing per-level scale heads at stride 4 (128 channels), SyncBN (BN on one process or
# on CPU), whole-image inference. Configs replace `backbone` and the neck's in_channels.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(type='SegDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                         pad_val=0, seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(type='TimmBackbone', model_name='resnet50c', out_indices=(1, 2, 3, 4)),  # mmseg's ResNetV1c
    neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=4),
    decode_head=dict(
        type='FPNHead',
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
)
