# VAN-B2 Semantic FPN 40k on ADE20K, as Visual-Attention-Network/VAN-Segmentation configs/sem_fpn/VAN/
# fpn_van_base_ade20k_40k.py (the config of the released checkpoint, van.py@9b9e632): drop path 0.1, stage
# LayerNorms, AdamW 2e-4, wd 1e-4, poly (power 0.9) over 40k iterations, 8 GPUs x 4 images. Reported: 46.7 mIoU
# (README; its test pipeline then used multi-scale ratios 0.5-1.75). The released checkpoint (Google Drive link in the
# README) loads with load_from or tools/test.py CONFIG CKPT.
_base_ = ['../_base_/models/fpn_sem.py', '../_base_/datasets/ade20k.py', '../_base_/schedules/schedule_40k.py']
model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='van_b2', out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/van_b2.pth.tar
    neck=dict(in_channels=[64, 128, 320, 512]),
)
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)]
