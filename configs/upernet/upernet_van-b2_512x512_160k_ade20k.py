# VAN-B2 UperNet 160k on ADE20K, as Visual-Attention-Network/VAN-Segmentation
# configs/upernet/1k_pretrained/upernet_van_b2_512x512_160k_ade20k.py (van.py@8285fc7: drop path 0.1, LayerNorm on every
# stage output, SyncBN): Swin's AdamW recipe, 8 GPUs x 2 images. Reported: 50.1 mIoU multi-scale (README; no
# single-scale number). The released checkpoint (TsingHua Cloud link in the README) loads with load_from or
# tools/test.py CONFIG CKPT.
_base_ = ['../_base_/models/upernet.py', '../_base_/datasets/ade20k.py',
          '../_base_/schedules/upernet_adamw_160k.py']
model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='van_b2', out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
        norm_eps=1e-5,  # the stage LayerNorms of this checkpoint's code (van.py@8285fc7); the S-FPN one used 1e-6
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/van_b2.pth.tar
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320),
)
train_dataloader = dict(batch_size=2)  # x 8 GPUs
