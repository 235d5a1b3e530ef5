# The embedded shapes classification split (4 classes, 64x64), generated into the cache on first use.
dataset_type = 'ShapesClsDataset'
img_size = 64
train_pipeline = dict(type='TimmTransform', input_size=img_size, is_training=True, scale=(0.5, 1.0), hflip=0.5,
                      color_jitter=0.2, interpolation='bilinear')
test_pipeline = dict(type='TimmTransform', input_size=img_size, is_training=False, crop_pct=1.0,
                     interpolation='bilinear')

train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, split='train', pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, split='val', pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 2))
test_evaluator = val_evaluator
