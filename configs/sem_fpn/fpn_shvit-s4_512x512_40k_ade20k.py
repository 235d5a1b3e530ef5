# SHViT-S4 Semantic FPN 40k on ADE20K. SHViT (ysj9909/SHViT) released no segmentation code or result;
# this is the Semantic FPN recipe VAN-Segmentation uses (AdamW 2e-4, wd 1e-4, poly 0.9, 40k) on the detection settings
# of downstream/configs/retinanet_shvit_s4_fpn_1x_coco.py: strides 16/32/64, EfficientViTFPN with one transposed
# conv for stride 8, so the FPN head predicts at stride 8 (not 4). No reported number.
_base_ = ['../_base_/models/fpn_sem.py', '../_base_/datasets/ade20k.py', '../_base_/schedules/schedule_40k.py']
model = dict(
    backbone=dict(
        _delete_=True, type='TimmBackbone', model_name='shvit_s4', out_indices=(0, 1, 2),
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/shvit_s4.pth
    neck=dict(_delete_=True, type='EfficientViTFPN', in_channels=[224, 336, 448], out_channels=256, num_outs=4,
              num_extra_trans_convs=1),
    decode_head=dict(feature_strides=[8, 16, 32, 64]),
)
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)]
