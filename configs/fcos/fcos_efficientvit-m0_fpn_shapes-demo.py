# Demo (`make demo`): FCOS on EfficientViT-M0 with the EfficientViT detection neck (strides 16/32/64 in, a
# transposed conv adds stride 8, P3-P7 out), trained from scratch on the embedded shapes detection split (4 classes,
# 128x128 images with 2-6 overlapping shapes of 10-96 px on noisy backgrounds; 1500 train / 200 val images,
# generated into the cache on first use) within about 8 minutes on 2 CPU cores, then evaluated with COCO bbox mAP.
# The images are used at their size (no resize); horizontal flips only (other augmentations change the shapes).
# EfficientViT-M0 learns fastest per CPU second of the visionzoo families here (VAN-B0 reached 0.09 mAP in 12 min).
_base_ = ['../_base_/models/fcos_fpn.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(model_name='efficientvit_m0', out_indices=(0, 1, 2), frozen_stages=-1, norm_eval=False),
    neck=dict(_delete_=True, type='EfficientViTFPN', out_channels=64, num_outs=5, num_extra_trans_convs=1,
              add_extra_convs='on_input'),
    bbox_head=dict(num_classes=4, in_channels=64),
)

dataset_type = 'ShapesDetDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackDetInputs')]
# no loader processes: decoding 16 small PNGs takes milliseconds, while worker processes compete for the 2 cores
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='det_collate'),
    dataset=dict(type=dataset_type, split='train', pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='det_collate'),
    dataset=dict(type=dataset_type, split='val', test_mode=True, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', metric='bbox')
test_evaluator = val_evaluator

max_epochs = 8
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=2e-5, by_epoch=True, begin=0, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2), logger=dict(interval=10))
