# Demo: Semantic FPN on VAN-B0 trained from scratch on the semantic shapes split (background + 4 classes, 128x128,
# 1500 train / 200 val images) on 2 CPU cores, then evaluated with mIoU:
#   python tools/train.py configs/sem_fpn/fpn_van-b0_shapes-demo.py
# A small head (64-channel FPN and scale heads), BN (one process), AdamW with a short warm-up and cosine decay.
_base_ = ['../_base_/models/fpn_sem.py', '../_base_/datasets/shapes_seg.py', '../_base_/default_runtime.py']

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size_divisor=32),
    backbone=dict(_delete_=True, type='TimmBackbone', model_name='van_b0', out_indices=(0, 1, 2, 3),
                  drop_path_rate=0.0),
    neck=dict(in_channels=[32, 64, 160, 256], out_channels=64),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=64, num_classes=5, norm_cfg=norm_cfg, dropout_ratio=0.0),
)

max_epochs = 4
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))
