# EfficientViT-M0 as the official detection code builds it (microsoft/Cream EfficientViT/downstream/efficientvit.py):
# query depthwise kernels (7, 5, 3, 3) where the classification M0 uses (5, 5, 5, 5), so the classification M0
# checkpoint does not fit its query convs (the other M variants share kernels between the two). Three maps at
# strides 16/32/64, every BatchNorm kept in eval mode, nothing frozen. Pair it with a neck that builds strides
# 4/8 (EfficientViTFPN in the official code).
backbone = dict(
    type='TimmBackbone',
    model_name='efficientvit_m0',
    kernels=(7, 5, 3, 3),
    out_indices=(0, 1, 2),
    frozen_stages=-1,
    norm_eval=True,
)
