"""The non-finite-loss guard of the optimizer wrappers: every model type (classifier, detector), plain and under
DDP, stops with the iteration and every loss term named, or skips the batch leaving the weights unchanged."""
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub

import visionzoo  # noqa: F401  (registers everything)
from visionzoo.engine.optim import CPUAmpOptimWrapper, GuardedOptimWrapper
from visionzoo.engine.runner_utils import use_guarded_optim_wrapper
from visionzoo.registry import MODELS
from visionzoo.utils.errors import ConfigError, NonFiniteLossError

TINY_BACKBONE = dict(type='TimmBackbone', model_name='resnet10t', out_indices=(2, 3, 4))
RETINANET = dict(type='RetinaNet', backbone=TINY_BACKBONE,
                 neck=dict(type='FPN', out_channels=32, num_outs=5, add_extra_convs='on_input'),
                 bbox_head=dict(type='RetinaHead', num_classes=3, in_channels=32))
CLASSIFIER = dict(type='ImageClassifier', backbone=dict(model_name='resnet10t'),
                  head=dict(type='LinearClsHead', num_classes=3))


def _det_batch(size=64):
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 60, (3, size, size), generator=g, dtype=torch.uint8)
    img[:, 10:40, 12:44] = 255
    sample = dict(img_id=0, img_path='0.png', ori_shape=(size, size), img_shape=(size, size), scale_factor=(1., 1.),
                  flip=False, gt_bboxes=torch.tensor([[12., 10., 44., 40.]]), gt_labels=torch.tensor([1]))
    return dict(inputs=[img], data_samples=[sample])


def _cls_batch():
    g = torch.Generator().manual_seed(0)
    return dict(inputs=torch.randn(4, 3, 32, 32, generator=g), data_samples=dict(gt_label=torch.tensor([0, 1, 2, 1])))


def _model_and_batch(kind):
    torch.manual_seed(0)
    if kind == 'detector':
        return MODELS.build(RETINANET), _det_batch
    return MODELS.build(CLASSIFIER), _cls_batch


def _poison(model, kind):
    """Make the next losses non-finite: loss_bbox of the detector, the inputs of the classifier."""
    real_loss = model.loss if kind == 'detector' else None
    if kind == 'detector':
        model.loss = lambda *a: {k: v * float('nan') if k == 'loss_bbox' else v for k, v in real_loss(*a).items()}
        return 'loss_bbox=nan'
    real_forward = model.forward
    model.forward = lambda inputs, *a, **k: real_forward(inputs * float('inf'), *a, **k)
    return 'loss=nan'


def _check_stop_or_skip(step, model, kind, mode, wrapper):
    step()  # a finite step first: the wrapper works as mmengine's
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    term = _poison(model, kind)
    MessageHub.get_current_instance().update_info('iter', 41)
    if mode == 'stop':
        with pytest.raises(NonFiniteLossError, match=rf'iteration 42 .*{term}.*nonfinite_loss=.skip.'):
            step()
    else:
        with pytest.warns(UserWarning, match=rf'iteration 42 .*{term}'):
            step()
    for k, v in model.named_parameters():  # no optimizer step (BatchNorm statistics do move in the forward)
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize('mode', ['stop', 'skip'])
@pytest.mark.parametrize('kind', ['detector', 'classifier'])
def test_non_finite_loss_stops_or_skips_before_the_step(kind, mode):
    model, batch = _model_and_batch(kind)
    wrapper = GuardedOptimWrapper(optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3), nonfinite_loss=mode)
    _check_stop_or_skip(lambda: model.train_step(batch(), wrapper), model, kind, mode, wrapper)


def test_cpu_amp_wrapper_has_the_guard():
    model, batch = _model_and_batch('classifier')
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    _check_stop_or_skip(lambda: model.train_step(batch(), wrapper), model, 'classifier', 'stop', wrapper)


@pytest.mark.parametrize('mode', ['stop', 'skip'])
def test_ddp_train_step_goes_through_the_guard(tmp_path, mode):
    """MMDistributedDataParallel.train_step bypasses the model's train_step; the guard sits in update_params."""
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0, world_size=1)
    try:
        model, batch = _model_and_batch('detector')
        ddp = MMDistributedDataParallel(module=model, device_ids=None)
        wrapper = GuardedOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), nonfinite_loss=mode)
        _check_stop_or_skip(lambda: ddp.train_step(batch(), wrapper), model, 'detector', mode, wrapper)
    finally:
        dist.destroy_process_group()


def test_bad_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="optim_wrapper.nonfinite_loss: expected 'stop' or 'skip', got 'ignore'"):
        GuardedOptimWrapper(optimizer=torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1),
                            nonfinite_loss='ignore')


def _cfg(model=None, **optim_wrapper):
    return Config(dict(model=dict(type='RetinaNet', **(model or {})),
                       optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1), **optim_wrapper)))


def test_runner_setup_substitutes_guarded_wrappers_and_moves_the_old_option():
    cfg = _cfg()
    use_guarded_optim_wrapper(cfg)
    assert cfg.optim_wrapper.type == 'GuardedOptimWrapper' and 'nonfinite_loss' not in cfg.optim_wrapper
    for given, expected in (('OptimWrapper', 'GuardedOptimWrapper'),
                            ('mmengine.OptimWrapper', 'GuardedOptimWrapper'),
                            ('AmpOptimWrapper', 'GuardedAmpOptimWrapper'),
                            ('CPUAmpOptimWrapper', 'CPUAmpOptimWrapper')):
        cfg = _cfg(type=given)
        use_guarded_optim_wrapper(cfg)
        assert cfg.optim_wrapper.type == expected, given
    cfg = _cfg(model=dict(nonfinite_loss='skip'))  # the spelling of earlier configs
    use_guarded_optim_wrapper(cfg)
    assert 'nonfinite_loss' not in cfg.model and cfg.optim_wrapper.nonfinite_loss == 'skip'
    with pytest.raises(ConfigError, match='model.nonfinite_loss=.skip. contradicts optim_wrapper.nonfinite_loss'):
        use_guarded_optim_wrapper(_cfg(model=dict(nonfinite_loss='skip'), nonfinite_loss='stop'))
    with pytest.raises(ConfigError, match="optim_wrapper.nonfinite_loss: expected 'stop' or 'skip'"):
        use_guarded_optim_wrapper(_cfg(nonfinite_loss='ignore'))
    with pytest.raises(ConfigError, match="type='MyWrapper' has no non-finite-loss guard"):
        use_guarded_optim_wrapper(_cfg(type='MyWrapper', nonfinite_loss='skip'))


def test_skip_stops_after_max_consecutive_skips():
    """'skip' must not "train" to the end on NaN only: a finite loss resets the count, N in a row stop the run."""
    model, batch = _model_and_batch('classifier')
    wrapper = GuardedOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), nonfinite_loss='skip',
                                  max_consecutive_skips=3)
    real_forward = model.forward
    poisoned = [False]
    model.forward = lambda inputs, *a, **k: real_forward(inputs * (float('inf') if poisoned[0] else 1.0), *a, **k)

    def step(bad):
        poisoned[0] = bad
        return model.train_step(batch(), wrapper)

    for bad in (True, True, False, True, True):  # never 3 in a row
        if bad:
            with pytest.warns(UserWarning, match='skipping this batch'):
                step(True)
        else:
            step(False)
    with pytest.raises(NonFiniteLossError, match=r'3 batches in a row .*max_consecutive_skips=3'):
        step(True)
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match='max_consecutive_skips: expected a positive int'):
            GuardedOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), max_consecutive_skips=bad)
