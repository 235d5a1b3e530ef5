"""Semantic segmentation through tools/train.py and tools/test.py on the demo config (tiny shapes split): losses
fall, test.py reproduces the last validation mIoU, ``--out DIR`` writes label PNGs equal to the predictions'
argmax, ``--show-dir`` draws coloured masks, and a bad label file is one clear error."""
import glob
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, TINY_SHAPES, run_tool, write_config
from test_tools import _assert_one_clear_error, _scalars

DEMO = os.path.join(ROOT, 'configs', 'sem_fpn', 'fpn_efficientvit-m0_shapes-demo.py')


def tiny_seg_config(tmp_path, tiny_shapes, extra: str = '', name='tiny_seg.py') -> str:
    """The demo config on the tiny shapes split (4 train / 2 val images of 64 px), 8 epochs of 2 iterations."""
    return write_config(tmp_path / name, f'''
_base_ = [{DEMO!r}]
shapes = dict(type='ShapesSegDataset', data_root={tiny_shapes['data_root']!r}, shapes_cfg={TINY_SHAPES!r})
train_dataloader = dict(batch_size=2, dataset=dict(shapes, split='train', _delete_=True,
                                                   pipeline={{{{_base_.train_pipeline}}}}))
val_dataloader = dict(batch_size=2, dataset=dict(shapes, split='val', _delete_=True,
                                                 pipeline={{{{_base_.test_pipeline}}}}))
test_dataloader = val_dataloader
max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4)]
optim_wrapper = dict(optimizer=dict(lr=3e-3))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4))
custom_hooks = [dict(type='MetricTableHook')]
{extra}
''')


@pytest.fixture(scope='module')
def seg_trained(tiny_shapes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('seg')
    cfg = tiny_seg_config(tmp, tiny_shapes)
    work_dir = tmp / 'run'
    proc = run_tool('train.py', cfg, '--work-dir', work_dir, check=True)
    return dict(cfg=cfg, work_dir=str(work_dir), log=proc.stdout + proc.stderr, tmp=tmp)


def test_training_lowers_the_loss_and_validates_with_miou(seg_trained):
    rows = _scalars(seg_trained['work_dir'])
    losses = [r['decode.loss_ce'] for r in rows if 'decode.loss_ce' in r]
    assert len(losses) == 16, rows[:3]
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), losses
    val = [r for r in rows if 'mIoU' in r]
    assert len(val) == 2 and all(0.0 <= r['mIoU'] <= 100.0 and 0.0 <= r['aAcc'] <= 100.0 for r in val)
    table = seg_trained['log'].split('per class results:')[-1]
    for name in ('background', 'circle', 'square', 'star', 'triangle'):
        assert re.search(rf'\|\s*{name}\s*\|', table), table[:2000]


def test_test_tool_reproduces_the_last_miou_and_writes_outputs(seg_trained, tiny_shapes, tmp_path):
    final = [r for r in _scalars(seg_trained['work_dir']) if 'mIoU' in r][-1]
    out, show = tmp_path / 'labels', tmp_path / 'show'
    proc = run_tool('test.py', seg_trained['cfg'], os.path.join(seg_trained['work_dir'], 'epoch_8.pth'),
                    '--work-dir', tmp_path / 'test', '--out', out, '--show-dir', show, check=True)
    m = re.search(r'\|\s*mIoU\s*\|\s*([\d.]+)\s*\|', proc.stdout)
    assert m, proc.stdout[-3000:]
    assert float(m.group(1)) == pytest.approx(final['mIoU'], abs=1e-2)
    val_images = sorted(glob.glob(os.path.join(tiny_shapes['det_val_img'], '*.png')))
    written = sorted(os.listdir(out))
    assert written == [os.path.basename(p) for p in val_images]
    for name in written:
        label = np.array(Image.open(out / name))
        img = np.array(Image.open(os.path.join(tiny_shapes['det_val_img'], name)))
        assert label.shape == img.shape[:2] and label.dtype == np.uint8 and label.max() <= 4
    drawn = sorted(os.listdir(show))
    assert len(drawn) == len(val_images)
    pic = np.array(Image.open(show / drawn[0]))
    assert pic.shape[0] >= 320 and pic.shape[1] > pic.shape[0]  # upscaled, with a legend strip
    again = run_tool('test.py', seg_trained['cfg'], os.path.join(seg_trained['work_dir'], 'epoch_8.pth'),
                     '--out', out)
    _assert_one_clear_error(again, '--out', 'not an empty folder')


def test_label_map_of_another_size_is_one_error(seg_trained, tiny_shapes, tmp_path):
    labels = tmp_path / 'labels'
    seg_dir = os.path.dirname(glob.glob(os.path.join(tiny_shapes['data_root'], '**', 'seg-v1', 'val', '*.png'),
                                        recursive=True)[0])
    shutil.copytree(seg_dir, labels)
    victim = sorted(n for n in os.listdir(labels) if n.endswith('.png'))[0]
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(labels / victim)
    extra = (f"test_dataloader = dict(batch_size=2, dataset=dict(type='SegDataset', _delete_=True, "
             f"data_prefix=dict(img_path={tiny_shapes['det_val_img']!r}, seg_map_path={str(labels)!r}), "
             f"img_suffix='.png', metainfo=dict(classes=('background', 'circle', 'square', 'star', 'triangle')), "
             f"pipeline={{{{_base_.test_pipeline}}}}))\n")
    cfg = tiny_seg_config(tmp_path, tiny_shapes, extra=extra, name='bad_label.py')
    proc = run_tool('test.py', cfg, os.path.join(seg_trained['work_dir'], 'epoch_8.pth'), '--work-dir',
                    tmp_path / 'w')
    _assert_one_clear_error(proc, re.escape(str(labels / victim)), '10x12|12x10|size')
