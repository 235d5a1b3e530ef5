# NAT-Tiny Mask R-CNN on the shared 1x schedule, with the backbone settings of
# SHI-Labs/Neighborhood-Attention-Transformer detection/configs/nat/mask_rcnn_nat_tiny_3x_coco.py: drop path 0.2, a
# LayerNorm (nn.LayerNorm, eps 1e-5) on each level output (the official norm0..norm3), AdamW 1e-4, wd 0.05, no decay
# on rpb and norms. The official run is 3x (36 epochs, lr x0.1 after epochs 27 and 33, DETR's multi-scale resize +
# crop augmentation, fp16); for 3x set train_cfg.max_epochs=36 and the MultiStepLR milestones to [27, 33]. No
# reported number for 1x; reported for 3x: 47.7 box AP / 42.6 mask AP, 48M params, 258 GFLOPs (detection/NAT.md).
_base_ = ['../_base_/models/mask-rcnn_fpn.py', '../_base_/datasets/coco_instance.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='nat_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
        out_norm=dict(type='LN', eps=1e-5),
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/nat_tiny.pth
    neck=dict(in_channels=[64, 128, 256, 512]),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'rpb': dict(decay_mult=0.0)}))
