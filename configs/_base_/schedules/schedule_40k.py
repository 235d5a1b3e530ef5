# mmseg's schedule_40k.py: SGD 0.01 (momentum 0.9, wd 5e-4), poly decay (power 0.9) to 1e-4 over 40k iterations,
# validation and a checkpoint every 4k. Family configs replace the optimizer (AdamW) and add warm-up. Includes the
# default runtime, with iteration-based logging and checkpoints (leaf configs list this file, not default_runtime.py).
_base_ = ['../default_runtime.py']
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005),
                     clip_grad=None)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000),
)
log_processor = dict(by_epoch=False)
