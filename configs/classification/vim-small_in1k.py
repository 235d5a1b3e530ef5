# Vision Mamba Vim-S (visionzoo's vim_small) on ImageNet-1k, the official recipe: batch 64 x 8 GPUs, AdamW lr 1e-3
# (1e-3 x 512 / 512), weight decay 0.05, drop path 0.05, 300 epochs.
_base_ = ['./vim-tiny_in1k.py']

model = dict(backbone=dict(model_name='vim_small', drop_path_rate=0.05))
train_dataloader = dict(batch_size=64)
