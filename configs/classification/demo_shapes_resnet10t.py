# Demo: timm's resnet10t trained from scratch on the embedded shapes data (4 classes, 64x64), about 4 minutes on
# 2 CPU cores. Augmentation is flips only: random crops with aspect changes would turn squares into rectangles
# and circles into ellipses, i.e. change the class.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/shapes_cls.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(model_name='resnet10t'),
    head=dict(type='LinearClsHead', num_classes=4),
)

train_pipeline = dict(type='TimmTransform', input_size=64, is_training=True, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                      hflip=0.5, vflip=0.5, color_jitter=0.0, interpolation='bilinear')
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))

max_epochs = 25
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=2, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=2, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=5)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(interval=5))
