# The UperNet 160k recipe of Swin (mmseg's swin configs) that VAN-Segmentation and BiFormer use for ADE20K: AdamW 6e-5
# (betas 0.9/0.999, wd 0.01, no decay on norms, position tables), 1500 iterations of linear warm-up from 1e-6, then
# linear ("poly" power 1.0) decay to 0 at 160k iterations (the configs set 2 images per GPU, on 8 GPUs).
_base_ = ['./schedule_160k.py']
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'absolute_pos_embed': dict(decay_mult=0.0),
                                    'relative_position_bias_table': dict(decay_mult=0.0),
                                    'norm': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
