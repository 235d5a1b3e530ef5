# Evaluate any registered model on ImageNet-1k val with the model's own preprocessing (as timm's validate.py):
#   python tools/test.py configs/imagenet/eval.py WEIGHTS --cfg-options model.backbone.model_name=van_b0
# The eval transform comes from the model's pretrained cfg (input size, crop_pct, crop_mode, interpolation, mean/std);
# tools/test.py fills in model.backbone.model_name. Data: data/imagenet/val/<wnid>/*.JPEG, or a flat val/ with
# meta/val.txt (mmpretrain) or ILSVRC2012_validation_ground_truth.txt + devkit (see ImageNetDataset).
# Per-class table: --cfg-options test_evaluator.classwise=True; per-image predictions: --out FILE.json.
# The training entries only come from the bases; train with a family's recipe config.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/imagenet.py', '../_base_/schedules/cls_adamw_300e.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(model_name='van_b0'),
    head=dict(type='LinearClsHead', num_classes=1000),
)
test_dataloader = dict(
    batch_size=64,
    dataset=dict(pipeline=dict(type='ModelEvalTransform', model_name=None, _delete_=True)),
)
test_evaluator = dict(type='Accuracy', topk=(1, 5), classwise=False)
