# Vim-Ti UperNet 60k on ADE20K, as hustvl/Vim seg/configs/vim/upernet/upernet_vim_tiny_24_512_slide_60k.py with the
# overrides of seg/scripts/ft_vim_tiny_upernet.sh (code at commit bb3928b): no class token, the mixer outputs of
# blocks 5/11/17/23 (VisionMambaSeg's use_residual_as_feature=False) at stride 16 turned into strides 4-32 by the
# BEiT pyramid (Feature2Pyramid), UPerHead with 192 channels, 512x512 position grid (sliding-window test, crop 512,
# stride 341), AdamW 2e-4, wd 0.1, 1500 iterations of warm-up then linear decay, 4 GPUs x 8 images. The official
# layer-wise lr decay (0.92) reaches only pos_embed and patch_embed (its layer ids know `blocks.*`, Vim has
# `layers.*`); it is left out here. Reported: 41.0 mIoU (Vim paper, arXiv:2401.09417). No checkpoint was released;
# checkpoints of the official training code load with load_from.
_base_ = ['../_base_/models/upernet.py', '../_base_/datasets/ade20k.py',
          '../_base_/schedules/upernet_adamw_160k.py']
model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='vim_tiny', out_indices=(5, 11, 17, 23), img_size=512,
        class_token=False, dense_features='mixer', drop_path_rate=0.1,
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/vim_t_midclstok_76p1acc.pth
    neck=dict(type='Feature2Pyramid', embed_dim=192, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[192, 192, 192, 192], channels=192),
    auxiliary_head=dict(in_channels=192),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)),
)
optim_wrapper = dict(optimizer=dict(lr=2e-4, weight_decay=0.1), paramwise_cfg=dict(custom_keys={}, bias_decay_mult=0.0,
                                                                                     norm_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=60000, by_epoch=False),
]
train_cfg = dict(max_iters=60000, val_interval=6000)
default_hooks = dict(checkpoint=dict(interval=6000))
train_dataloader = dict(batch_size=8)  # x 4 GPUs
