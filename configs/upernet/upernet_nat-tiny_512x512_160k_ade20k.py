# NAT-Tiny UperNet 160k on ADE20K, as SHI-Labs/Neighborhood-Attention-Transformer
# segmentation/configs/nat/upernet_nat_tiny_512x512_160k_ade20k.py: drop path 0.3, a LayerNorm (nn.LayerNorm, eps
# 1e-5) on each level output (the official norm0..norm3), SyncBN heads, AdamW 6e-5 (wd 0.01, no decay on rpb and
# norms), 1500 iterations of linear warm-up, poly decay, 2 images x 8 GPUs, fp16 (here: --amp on CUDA).
# Reported: 47.1 mIoU single-scale, 48.4 multi-scale, 58M params, 934 GFLOPs (segmentation/NAT.md).
_base_ = ['../_base_/models/upernet.py', '../_base_/datasets/ade20k.py',
          '../_base_/schedules/upernet_adamw_160k.py']
model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='nat_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.3,
        out_norm=dict(type='LN', eps=1e-5),
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/nat_tiny.pth
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'rpb': dict(decay_mult=0.0)}))
train_dataloader = dict(batch_size=2)  # x 8 GPUs
