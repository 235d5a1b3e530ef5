# MambaOut-T UperNet 160k on ADE20K. No segmentation code was released; the author's recipe (yuweihao/MambaOut issue
# #251): Swin's mmseg UperNet config with a LayerNorm on each stage output, drop path 0.3 (as Swin-T; not re-checked).
# Reported (paper arXiv:2405.07992, not re-checked here): 47.4 mIoU single-scale / 48.6 multi-scale.
_base_ = ['../_base_/models/upernet.py', '../_base_/datasets/ade20k.py',
          '../_base_/schedules/upernet_adamw_160k.py']
model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='mambaout_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.3,
        out_norm='LN',
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/mambaout_tiny.pth
    decode_head=dict(in_channels=[96, 192, 384, 576]),
    auxiliary_head=dict(in_channels=384),
)
train_dataloader = dict(batch_size=2)  # x 8 GPUs
