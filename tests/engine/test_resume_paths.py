"""Checkpoints a run can rely on (issue 19, defects 2-4 and the checkpoint-writer fault test).

- ``last_checkpoint`` holds a name relative to the work dir; a moved or copied work dir resumes from its own files
  (old absolute markers are read by file name when the file sits next to the marker);
- ``load_from`` of a foreign checkpoint and ``--resume`` of another model's checkpoint stop with one line naming
  the keys before anything is restored; ``load_from_ignore_keys`` lets a fine-tuning run re-initialise a head;
- a process killed while a checkpoint is being written leaves the previous checkpoint and marker valid.
"""
import os
import re
import shutil

import pytest
import torch

from conftest import run_tool, tiny_cls_config
from test_tools import _assert_one_clear_error
from visionzoo.engine.checkpoint import safe_load
from visionzoo.engine.resume import resolve_last_checkpoint
from visionzoo.utils.errors import CheckpointError


@pytest.fixture(scope='module')
def run2(tiny_shapes, tmp_path_factory):
    """A finished 2-epoch run (checkpoints every epoch, the last two kept)."""
    tmp = tmp_path_factory.mktemp('resume')
    cfg = tiny_cls_config(tmp, tiny_shapes, max_epochs=2,
                          extra='default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))\n')
    work_dir = tmp / 'run'
    run_tool('train.py', cfg, '--work-dir', work_dir, check=True)
    return dict(cfg=cfg, work_dir=work_dir, tmp=tmp)


def test_marker_is_relative_and_resolves_in_the_work_dir(run2):
    assert (run2['work_dir'] / 'last_checkpoint').read_text() == 'epoch_2.pth'
    assert resolve_last_checkpoint(str(run2['work_dir'])) == os.path.join(str(run2['work_dir']), 'epoch_2.pth')


def test_old_absolute_markers(tmp_path):
    """mmengine's own hook writes absolute paths: read by file name next to the marker, else as written."""
    other = tmp_path / 'original'
    other.mkdir()
    (other / 'epoch_3.pth').write_bytes(b'x')
    copy = tmp_path / 'copy'
    copy.mkdir()
    (copy / 'last_checkpoint').write_text(str(other / 'epoch_3.pth'))
    assert resolve_last_checkpoint(str(copy)) == str(other / 'epoch_3.pth')  # out_dir elsewhere: as written
    (copy / 'epoch_3.pth').write_bytes(b'y')
    assert resolve_last_checkpoint(str(copy)) == str(copy / 'epoch_3.pth')  # the copy's own file wins
    shutil.rmtree(other)
    (copy / 'last_checkpoint').write_text(str(other / 'epoch_9.pth'))
    with pytest.raises(CheckpointError, match=r'last_checkpoint: names .*epoch_9\.pth, which does not exist'):
        resolve_last_checkpoint(str(copy))
    (copy / 'last_checkpoint').unlink()
    with pytest.raises(CheckpointError, match=r'holds epoch_3\.pth but no last_checkpoint'):
        resolve_last_checkpoint(str(copy))


def test_moved_work_dir_with_an_old_absolute_marker_resumes(run2, tmp_path):
    moved = tmp_path / 'moved'
    shutil.copytree(run2['work_dir'], moved)
    gone = tmp_path / 'gone'  # where the run was when mmengine wrote the marker
    (moved / 'last_checkpoint').write_text(str(gone / 'epoch_2.pth'))
    proc = run_tool('train.py', run2['cfg'], '--work-dir', moved, '--resume', '--cfg-options',
                    'train_cfg.max_epochs=3', check=True)
    log = proc.stdout + proc.stderr
    assert re.search(r'resumed epoch: 2', log), log[-3000:]
    assert safe_load(str(moved / 'epoch_3.pth'))['meta']['epoch'] == 3
    assert (moved / 'last_checkpoint').read_text() == 'epoch_3.pth'
    # max_keep_ckpts=2: epoch_1 removed after epoch_3 was complete; the original run is untouched
    assert not (moved / 'epoch_1.pth').exists() and (moved / 'epoch_2.pth').exists()
    assert sorted(p.name for p in run2['work_dir'].glob('*.pth')) == ['epoch_1.pth', 'epoch_2.pth']


def test_resume_of_a_finished_run_says_so(run2, tmp_path):
    copy = tmp_path / 'done'
    shutil.copytree(run2['work_dir'], copy)
    proc = run_tool('train.py', run2['cfg'], '--work-dir', copy, '--resume', check=True)
    assert re.search(r'at epoch 2 and train_cfg.max_epochs=2: nothing left to train', proc.stdout + proc.stderr)


def _head_keys(state):
    return [k for k in state if k.startswith('head.')]


def test_load_from_a_foreign_checkpoint_is_one_error(run2, tmp_path):
    foreign = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {'decoder.weight': torch.zeros(2, 2), 'encoder.bias': torch.zeros(3)}}, foreign)
    proc = run_tool('train.py', run2['cfg'], '--work-dir', tmp_path / 'w1', '--cfg-options', f'load_from={foreign}')
    err = _assert_one_clear_error(proc, re.escape(f'load_from={foreign}'), 'do not fit', r'\d+ missing',
                                  '2 unexpected', 'decoder.weight')
    assert 'load_from_ignore_keys' in err
    assert not list((tmp_path / 'w1').glob('*.pth')), 'trained although the weights did not load'


def test_load_from_ignore_keys_reinitialises_a_head(run2, tmp_path):
    state = safe_load(str(run2['work_dir'] / 'epoch_2.pth'))['state_dict']
    heads = _head_keys(state)
    assert heads
    # another number of classes: the head's weights have another shape
    other = {k: (torch.zeros(7, *v.shape[1:]) if k in heads else v) for k, v in state.items()}
    path = tmp_path / 'seven_classes.pth'
    torch.save({'state_dict': other}, path)
    proc = run_tool('train.py', run2['cfg'], '--work-dir', tmp_path / 'w2', '--cfg-options', f'load_from={path}',
                    'train_cfg.max_epochs=1')
    _assert_one_clear_error(proc, 'of another shape', re.escape(heads[0]))
    proc = run_tool('train.py', run2['cfg'], '--work-dir', tmp_path / 'w3', '--cfg-options', f'load_from={path}',
                    'train_cfg.max_epochs=1', r'load_from_ignore_keys=[head\.]', check=True)
    tuned = safe_load(str(tmp_path / 'w3' / 'epoch_1.pth'))['state_dict']
    assert tuned[heads[0]].shape == state[heads[0]].shape
    # the backbone started from the checkpoint: after one epoch at lr 1e-3 it is still close to it
    body = [k for k in state if k.endswith('conv1.0.weight') or k.endswith('conv1.weight')]
    assert body
    delta = (tuned[body[0]] - state[body[0]]).norm() / state[body[0]].norm()
    assert delta < 0.5, float(delta)


def test_resume_with_another_models_checkpoint_is_one_error(run2, tmp_path):
    ckpt = safe_load(str(run2['work_dir'] / 'epoch_2.pth'))
    ckpt['state_dict'] = {'decoder.weight': torch.zeros(2, 2)}
    path = tmp_path / 'other_model.pth'
    torch.save(ckpt, path)
    proc = run_tool('train.py', run2['cfg'], '--work-dir', tmp_path / 'w4', '--resume', path)
    _assert_one_clear_error(proc, re.escape(f'--resume {path}'), 'do not fit', 'unexpected', 'decoder.weight')
    weights_only = tmp_path / 'weights_only.pth'
    torch.save(safe_load(str(run2['work_dir'] / 'epoch_2.pth'))['state_dict'], weights_only)
    proc = run_tool('train.py', run2['cfg'], '--work-dir', tmp_path / 'w5', '--resume', weights_only)
    _assert_one_clear_error(proc, 'not a training checkpoint', 'load_from')


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tiny_shapes, tmp_path):
    extra = ("custom_imports = dict(imports=['kill_hook'], allow_failed_imports=False)\n"
             "custom_hooks = [dict(type='KillMidSaveHook', epoch=2)]\n"
             "default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1))\n")
    cfg = tiny_cls_config(tmp_path, tiny_shapes, max_epochs=2, extra=extra, name='killed.py')
    work_dir = tmp_path / 'w'
    proc = run_tool('train.py', cfg, '--work-dir', work_dir)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (work_dir / 'last_checkpoint').read_text() == 'epoch_1.pth'
    assert safe_load(str(work_dir / 'epoch_1.pth'))['meta']['epoch'] == 1
    assert not (work_dir / 'epoch_2.pth').exists()  # only the half-written temporary file
    plain = tiny_cls_config(tmp_path, tiny_shapes, max_epochs=2, name='plain.py',
                            extra='default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1))\n')
    proc = run_tool('train.py', plain, '--work-dir', work_dir, '--resume', check=True)
    assert re.search(r'resumed epoch: 1', proc.stdout + proc.stderr)
    assert safe_load(str(work_dir / 'epoch_2.pth'))['meta']['epoch'] == 2
    assert sorted(p.name for p in work_dir.glob('*.pth*')) == ['epoch_2.pth']
