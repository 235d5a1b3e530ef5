# Demo: a small classifier on the embedded shapes data, a few minutes on 2 CPU cores.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/shapes_cls.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(model_name='resnet10t'),
    head=dict(type='LinearClsHead', num_classes=4, label_smoothing=0.1),
)

max_epochs = 16
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=4)
val_cfg = dict()
test_cfg = dict()
