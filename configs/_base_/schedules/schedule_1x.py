# 1x COCO schedule of the backbone papers (Swin-style): AdamW lr 1e-4, weight decay 0.05 (none on norms and biases),
# 500-iteration linear warm-up, lr x0.1 after epochs 8 and 11, 12 epochs, total batch 16 (8 GPUs x 2).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
)
max_epochs = 12
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# the learning rate above is for a total batch of 16; `auto_scale_lr.enable=True` scales it to the actual batch
auto_scale_lr = dict(enable=False, base_batch_size=16)
