# ImageNet-1k: data/imagenet/{train,val}/<wnid>/*.JPEG, or a flat val/ with meta/val.txt or the ILSVRC2012 ground
# truth + devkit (ImageNetDataset); labels in timm's ImageNet-1k order
dataset_type = 'ImageNetDataset'
data_root = 'data/imagenet'
train_pipeline = dict(type='TimmTransform', input_size=224, is_training=True, auto_augment='rand-m9-mstd0.5-inc1',
                      re_prob=0.25, interpolation='bicubic')
test_pipeline = dict(type='TimmTransform', input_size=224, is_training=False, crop_pct=0.875, interpolation='bicubic')

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
