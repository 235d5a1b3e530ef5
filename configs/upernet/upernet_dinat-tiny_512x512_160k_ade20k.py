# DiNAT-Tiny UperNet 160k on ADE20K, as SHI-Labs/Neighborhood-Attention-Transformer
# segmentation/configs/dinat/upernet_dinat_tiny_512x512_160k_ade20k.py: the official dense dilations (larger than the
# 224² classification ones: 16 / 4-8 / 2-3-4 / 2 for 512² inputs), drop path 0.3, a LayerNorm (eps 1e-5) on each
# level output, and NAT-Tiny's recipe (configs/upernet/upernet_nat-tiny_512x512_160k_ade20k.py).
# Reported: 47.8 mIoU single-scale, 48.8 multi-scale, 58M params, 934 GFLOPs (segmentation/DiNAT.md).
_base_ = ['./upernet_nat-tiny_512x512_160k_ade20k.py']
model = dict(
    backbone=dict(
        model_name='dinat_tiny',
        dilations=[[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4] * 3, [1, 2, 1, 2, 1]],
        pretrained=False),  # ImageNet weights: --cfg-options model.backbone.pretrained=PATH/dinat_tiny_in1k_224.pth
)
