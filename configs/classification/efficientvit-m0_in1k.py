# EfficientViT-M0 (timm's efficientvit_m0) on ImageNet-1k, 300 epochs, batch 128 x 8 GPUs.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/imagenet.py', '../_base_/schedules/cls_adamw_300e.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(model_name='efficientvit_m0'),
    head=dict(type='LinearClsHead', num_classes=1000, label_smoothing=0.1),
)
