# BiFormer-S Semantic FPN 80k on ADE20K, as rayleizhu/BiFormer
# semantic_segmentation/configs/ade20k/sfpn.biformer_small.py: 8 routing regions per side, drop path 0.15, a LayerNorm
# (eps 1e-6) on each stage output, AdamW 2e-4, wd 1e-4, cosine decay (to 2e-12) after 1000 iterations of linear
# warm-up from 0.1x, fp16 (here: --amp on CUDA), 8 GPUs x 4 images.
# Reported: 48.9 mIoU single-scale (semantic_segmentation/README.md). No checkpoint was released.
_base_ = ['../_base_/models/fpn_sem.py', '../_base_/datasets/ade20k.py', '../_base_/schedules/schedule_80k.py']
model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='biformer_small', out_indices=(0, 1, 2, 3), n_win=8,
        drop_path_rate=0.15, out_norm='LN',
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/biformer_small.pth
    neck=dict(in_channels=[64, 128, 256, 512]),
)
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', eta_min=2e-12, begin=1000, end=80000, by_epoch=False),
]
