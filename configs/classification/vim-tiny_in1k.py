# Vision Mamba Vim-Ti (visionzoo's vim_tiny) on ImageNet-1k: the official DeiT-style recipe, 300 epochs,
# batch 128 x 8 GPUs, AdamW lr 5e-4 x 1024 / 512 = 1e-3, weight decay 0.05, drop path 0.1, label smoothing 0.1.
# The official runs use --no_amp (NaN losses under AMP); here the residual stream stays in float32, so --amp is safe.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/imagenet.py', '../_base_/schedules/cls_adamw_300e.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(model_name='vim_tiny', drop_path_rate=0.1),
    head=dict(type='LinearClsHead', num_classes=1000, label_smoothing=0.1),
)
