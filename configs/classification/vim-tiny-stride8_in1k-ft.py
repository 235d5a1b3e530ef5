# Vim-Ti+ (visionzoo's vim_tiny_stride8): the official 30-epoch fine-tune of Vim-Ti at patch stride 8
# (729 tokens at 224), weight decay 1e-8, no drop path. Official lr: 5e-6 x 1024 / 512 = 1e-5 with warm-up and
# floor also 1e-5, i.e. a constant 1e-5.
# Start from the stride-16 checkpoint: --cfg-options model.backbone.pretrained=PATH/vim_t_midclstok_76p1acc.pth
_base_ = ['./vim-tiny_in1k.py']

model = dict(backbone=dict(model_name='vim_tiny_stride8', drop_path_rate=0.0))
optim_wrapper = dict(optimizer=dict(lr=1e-5, weight_decay=1e-8))
param_scheduler = []
train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)
