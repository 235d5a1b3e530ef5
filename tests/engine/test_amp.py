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
