# BiFormer-S UperNet 160k on ADE20K, as rayleizhu/BiFormer semantic_segmentation/configs/ade20k/upernet.biformer_small.py:
# 8 routing regions per side ("training resolution is 512"; inputs padded to fit), drop path 0.3, a LayerNorm (eps
# 1e-6) on each stage output (the official extra_norms), SyncBN heads, Swin's AdamW recipe, fp16 (here: --amp on
# CUDA). Reported: 49.8 mIoU single-scale, 50.8 multi-scale + flip (semantic_segmentation/README.md). No checkpoint
# was released; checkpoints of the official training code load with load_from.
_base_ = ['../_base_/models/upernet.py', '../_base_/datasets/ade20k.py',
          '../_base_/schedules/upernet_adamw_160k.py']
model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='biformer_small', out_indices=(0, 1, 2, 3), n_win=8,
        drop_path_rate=0.3, out_norm='LN',
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/biformer_small.pth
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)
train_dataloader = dict(batch_size=2)  # x 8 GPUs
