"""Checkpoints load with weights_only=True, Runner checkpoints included; anything else is refused."""
import os
import pickle
import re

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from visionzoo.engine.checkpoint import install_checkpoint_loader, load_model_weights, load_state_dict_file, safe_load
from visionzoo.utils.errors import CheckpointError


def _runner_like_checkpoint(path):
    """What mmengine's Runner.save_checkpoint writes: message hub with HistoryBuffers and numpy values."""
    hub = MessageHub.get_instance('ckpt-test')
    for v in (1.0, 0.5, 0.25):
        hub.update_scalar('train/loss', v)
    hub.update_info('iter', 7)
    hub.update_info('np_value', np.float64(0.125))
    hub.update_info('np_array', np.arange(3))
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ckpt = dict(meta=dict(epoch=1, iter=7, seed=np.int64(3)), state_dict=model.state_dict(),
                message_hub=hub.state_dict(), optimizer=opt.state_dict())
    torch.save(ckpt, path)
    return ckpt


def test_plain_torch_load_refuses_runner_checkpoint_but_safe_load_reads_it(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    ckpt = _runner_like_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    loaded = safe_load(path)
    assert loaded['meta']['iter'] == 7 and int(loaded['meta']['seed']) == 3
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer)
    assert buf.current() == 0.25 and buf.min() == 0.25 and buf.max() == 1.0
    np.testing.assert_array_equal(loaded['message_hub']['runtime_info']['np_array'], np.arange(3))
    for k, v in ckpt['state_dict'].items():
        assert torch.equal(loaded['state_dict'][k], v)
    assert loaded['optimizer']['state'][0]['step'] == ckpt['optimizer']['state'][0]['step']


class _Evil:
    def __reduce__(self):
        return (os.system, ('touch EVIL_MARKER',))


class _EvilGetattr:
    def __reduce__(self):  # an allow-listed class, but a method that writes files
        return (getattr, (np.ndarray, 'tofile'))


@pytest.mark.parametrize('payload', [_Evil(), _EvilGetattr()], ids=['os.system', 'getattr-ndarray'])
def test_arbitrary_objects_are_refused(tmp_path, payload, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / 'evil.pth')
    torch.save({'x': payload}, path)
    with pytest.raises(CheckpointError, match='evil.pth') as err:
        safe_load(path)
    assert not (tmp_path / 'EVIL_MARKER').exists()
    # the message names what was refused and why, and never relays torch's advice to load with weights_only=False
    msg = str(err.value)
    assert 'weights_only' not in msg and 'will likely succeed' not in msg, msg
    expected = 'posix.system' if isinstance(payload, _Evil) else r"getattr\(ndarray, 'tofile'\)"
    assert re.search(expected, msg), msg
    if isinstance(payload, _Evil):
        assert 'outside the allow-list' in msg and 'arbitrary code' in msg, msg


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    class Sneaky:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))
    path = str(tmp_path / 'sneaky.pth')
    torch.save({'x': Sneaky()}, path)
    with pytest.raises(CheckpointError, match='only HistoryBuffer statistics'):
        safe_load(path)


def test_missing_and_non_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match='not found: .*missing.pth'):
        safe_load(str(tmp_path / 'missing.pth'))
    txt = tmp_path / 'notes.pth'
    txt.write_text('this is not a checkpoint')
    with pytest.raises(CheckpointError, match='notes.pth: not a PyTorch checkpoint'):
        safe_load(str(txt))
    torch.save([1, 2, 3], str(tmp_path / 'list.pth'))
    with pytest.raises(CheckpointError, match='list.pth: expected a dict'):
        load_state_dict_file(str(tmp_path / 'list.pth'))


def test_load_model_weights_is_strict_and_names_mismatches(tmp_path):
    src = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    path = str(tmp_path / 'w.pth')
    torch.save({'state_dict': {f'module.{k}': v for k, v in src.state_dict().items()}}, path)
    dst = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    load_model_weights(dst, load_state_dict_file(path), path)
    for a, b in zip(src.parameters(), dst.parameters()):
        assert torch.equal(a, b)
    other = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2))
    with pytest.raises(CheckpointError, match='shape mismatch'):
        load_model_weights(other, load_state_dict_file(path), path)


def test_mmengine_loader_goes_through_safe_load(tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
    install_checkpoint_loader()
    install_checkpoint_loader()  # idempotent: still our loader, registered once
    assert CheckpointLoader._schemes[''].__module__ == 'visionzoo.engine.checkpoint'
    path = str(tmp_path / 'epoch_1.pth')
    _runner_like_checkpoint(path)
    loaded = _load_checkpoint(path, map_location='cpu')
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    torch.save({'x': _Evil()}, str(tmp_path / 'evil.pth'))
    with pytest.raises(CheckpointError, match='evil.pth'):
        _load_checkpoint(str(tmp_path / 'evil.pth'), map_location='cpu')


def test_deit_style_checkpoint_with_argparse_args_loads(tmp_path):
    """Official releases trained with DeiT-style scripts (Vim among them) store ``args`` as an argparse.Namespace."""
    import argparse
    sd = torch.nn.Linear(3, 2).state_dict()
    path = str(tmp_path / 'official.pth')
    torch.save({'model': sd, 'epoch': 299, 'args': argparse.Namespace(lr=5e-4, model='vim_tiny')}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    ckpt = safe_load(path)
    assert ckpt['args'].model == 'vim_tiny'
    assert set(load_state_dict_file(path)) == {'weight', 'bias'}
