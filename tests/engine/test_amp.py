"""Mixed precision on CPU: bf16 autocast inside the optimizer wrapper's context."""
import pytest
import torch
from mmengine.config import Config

from visionzoo.engine.optim import CPUAmpOptimWrapper, amp_optim_wrapper_type
from visionzoo.engine.runner_utils import adapt_to_device
from visionzoo.utils.errors import ConfigError


def test_cpu_amp_runs_forward_in_bf16_and_keeps_fp32_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    before = [p.detach().clone() for p in model.parameters()]
    with wrapper.optim_context(model):
        out = model(x)
    assert out.dtype == torch.bfloat16
    loss = torch.nn.functional.mse_loss(out.float(), y)
    wrapper.update_params(loss)
    for p, b in zip(model.parameters(), before):
        assert p.dtype == torch.float32
        assert not torch.equal(p, b)
    plain = model(x)
    assert plain.dtype == torch.float32  # autocast ends with the context


def test_amp_flag_picks_wrapper_by_device():
    assert amp_optim_wrapper_type(False)['type'] == 'CPUAmpOptimWrapper'
    assert amp_optim_wrapper_type(True)['type'] == 'AmpOptimWrapper'


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only error')
def test_gpu_amp_wrapper_on_cpu_is_a_clear_error():
    cfg = Config(dict(optim_wrapper=dict(type='AmpOptimWrapper', optimizer=dict(type='SGD', lr=0.1))))
    with pytest.raises(ConfigError, match='AmpOptimWrapper.*CPUAmpOptimWrapper'):
        adapt_to_device(cfg)


def test_bad_dtype():
    with pytest.raises(ConfigError, match='optim_wrapper.dtype'):
        CPUAmpOptimWrapper(dtype='int8', optimizer=torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1))


def test_sync_bn_becomes_bn_in_cpu_distributed_runs(monkeypatch):
    """torch's SyncBatchNorm refuses CPU tensors once a process group exists: the tools use BN there."""
    import warnings
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)

    def cfg(launcher):
        return Config(dict(launcher=launcher, model=dict(
            decode_head=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
            auxiliary_head=[dict(norm_cfg=dict(type='SyncBN'))], neck=dict(norm='SyncBN'),
            backbone=dict(norm_cfg=dict(type='GN', num_groups=2)))))

    single = cfg('none')
    adapt_to_device(single)
    assert single.model.decode_head.norm_cfg.type == 'SyncBN'  # one process: SyncBN runs as BN already
    dist = cfg('pytorch')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        adapt_to_device(dist)
    m = dist.model
    assert m.decode_head.norm_cfg == dict(type='BN', requires_grad=True) and m.auxiliary_head[0].norm_cfg.type == 'BN'
    assert m.neck.norm == 'BN' and m.backbone.norm_cfg.type == 'GN'
    msg = [str(w.message) for w in caught if 'SyncBN' in str(w.message)]
    assert len(msg) == 1 and 'model.neck.norm' in msg[0] and 'model.auxiliary_head[0].norm_cfg' in msg[0]
