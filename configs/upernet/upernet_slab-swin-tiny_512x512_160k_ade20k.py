# SLAB-Swin-T UperNet 160k on ADE20K. SLAB released no segmentation code or result; this is Swin-T's mmseg recipe
# (configs/swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py: drop path 0.3, AdamW 6e-5,
# wd 0.01) on SLAB-Swin-T with its detection settings (SLA windows, PRepBN over 300k steps frozen afterwards, a
# LayerNorm per output). No reported number.
_base_ = ['../_base_/models/upernet.py', '../_base_/datasets/ade20k.py',
          '../_base_/schedules/upernet_adamw_160k.py']
model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='slab_swin_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.3,
        prepbn_steps=300000, out_norm=dict(type='LN', eps=1e-5),
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/slab_swin_tiny.pth
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384),
)
train_dataloader = dict(batch_size=2)  # x 8 GPUs
