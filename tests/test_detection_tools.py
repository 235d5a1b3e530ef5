"""Detection through tools/train.py and tools/test.py: training, resuming inside an epoch, COCO evaluation,
``--out`` results, ``--show-dir`` drawings, and bad input."""
import glob
import json
import os
import re
import shutil

import cv2
import pytest
import torch

from conftest import ROOT, TINY_SHAPES, run_tool, write_config
from test_tools import _assert_one_clear_error, _scalars
from visionzoo.engine.checkpoint import safe_load

DEMO = os.path.join(ROOT, 'configs', 'fcos', 'fcos_efficientvit-m0_fpn_shapes-demo.py')


def tiny_det_config(tmp_path, tiny_shapes, extra: str = '', name='tiny_det.py', train_ann=None) -> str:
    """The demo config on the tiny shapes detection split (4 train / 2 val images of 64 px), 3 epochs of 2 iterations,
    a checkpoint after every iteration, no random augmentation (so that runs can be compared exactly)."""
    train_ds = "dict(shapes, split='train', pipeline=train_pipe, _delete_=True)" if train_ann is None else (
        f"dict(type='CocoDataset', ann_file={train_ann!r}, data_prefix=dict(img={tiny_shapes['det_train_img']!r}), "
        f"pipeline=train_pipe, _delete_=True)")
    return write_config(tmp_path / name, f'''
_base_ = [{DEMO!r}]
shapes = dict(type='ShapesDetDataset', data_root={tiny_shapes['data_root']!r}, shapes_cfg={TINY_SHAPES!r})
train_pipe = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True), dict(type='PackDetInputs')]
test_pipe = [dict(type='LoadImageFromFile'), dict(type='PackDetInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset={train_ds})
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(shapes, split='val', test_mode=True, pipeline=test_pipe, _delete_=True))
test_dataloader = val_dataloader
max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=5)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, by_epoch=False, max_keep_ckpts=-1))
custom_hooks = [dict(type='MetricTableHook')]
{extra}
''')


@pytest.fixture(scope='module')
def det_trained(tiny_shapes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('det')
    cfg = tiny_det_config(tmp, tiny_shapes)
    work_dir = tmp / 'run'
    proc = run_tool('train.py', cfg, '--work-dir', work_dir, check=True)
    return dict(cfg=cfg, work_dir=str(work_dir), log=proc.stdout + proc.stderr, tmp=tmp)


def test_training_logs_losses_checkpoints_and_coco_metrics(det_trained):
    rows = _scalars(det_trained['work_dir'])
    losses = [r for r in rows if 'loss' in r]
    assert len(losses) == 6 and all({'loss_cls', 'loss_bbox', 'loss_centerness'} <= set(r) for r in losses)
    val = [r for r in rows if 'coco/bbox_mAP' in r]
    assert len(val) == 3 and all(0.0 <= r['coco/bbox_mAP'] <= 1.0 for r in val)
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]' in det_trained['log']
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(det_trained['work_dir'], 'iter_*.pth'))) == \
        [f'iter_{i}.pth' for i in range(1, 7)]


def test_kill_inside_an_epoch_and_resume_continues_exactly(det_trained, tiny_shapes, tmp_path):
    extra = "custom_imports = dict(imports=['kill_hook'], allow_failed_imports=False)\n" \
            "custom_hooks = [dict(type='KillAfterIterHook', iter=3)]\n"
    killed_cfg = tiny_det_config(tmp_path, tiny_shapes, extra=extra, name='killed.py')
    work_dir = tmp_path / 'killed'
    proc = run_tool('train.py', killed_cfg, '--work-dir', work_dir)
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL after iteration 3: the middle of epoch 2
    assert (work_dir / 'iter_3.pth').exists() and not (work_dir / 'iter_4.pth').exists()
    assert safe_load(str(work_dir / 'iter_3.pth'))['meta']['epoch'] == 1  # epoch 2 (0-based 1) was running

    proc = run_tool('train.py', det_trained['cfg'], '--work-dir', work_dir, '--resume', check=True)
    log = proc.stdout + proc.stderr
    assert 'resuming inside epoch 2: skipping its first 1 batches' in log, log[-3000:]
    resumed_iters = [r['iter'] for r in _scalars(str(work_dir)) if 'loss' in r]
    assert resumed_iters == [1, 2, 3, 4, 5, 6], resumed_iters  # no batch trained twice, none left out
    resumed = safe_load(str(work_dir / 'iter_6.pth'))
    ref = safe_load(os.path.join(det_trained['work_dir'], 'iter_6.pth'))
    assert resumed['meta']['iter'] == ref['meta']['iter'] == 6
    assert resumed['meta']['epoch'] == ref['meta']['epoch'] == 2  # saved inside the third epoch (0-based 2)
    for k, v in ref['state_dict'].items():
        torch.testing.assert_close(resumed['state_dict'][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_test_tool_writes_coco_results_and_drawings(det_trained, tiny_shapes, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    ckpt = os.path.join(det_trained['work_dir'], 'iter_6.pth')
    out, show = tmp_path / 'results.json', tmp_path / 'show'
    proc = run_tool('test.py', det_trained['cfg'], ckpt, '--work-dir', tmp_path / 'test', '--out', out,
                    '--show-dir', show, check=True)
    m = re.search(r'\|\s*coco/bbox_mAP\s*\|\s*(-?[\d.]+)\s*\|', proc.stdout)
    assert m, proc.stdout[-2000:]
    final = [r for r in _scalars(det_trained['work_dir']) if 'coco/bbox_mAP' in r][-1]['coco/bbox_mAP']
    assert float(m.group(1)) == pytest.approx(final, abs=1e-4)
    # the --out file is plain COCO results: pycocotools alone reproduces the printed mAP from it
    results = json.loads(out.read_text())
    assert results and {'image_id', 'category_id', 'bbox', 'score'} <= set(results[0])
    coco = COCO(tiny_shapes['det_val_ann'])
    ev = COCOeval(coco, coco.loadRes(str(out)), 'bbox')
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(float(m.group(1)), abs=1e-4)
    drawn = sorted(show.glob('*.png'))
    assert len(drawn) == 2
    assert all(cv2.imread(str(p)) is not None for p in drawn)
    again = run_tool('test.py', det_trained['cfg'], ckpt, '--out', out)
    _assert_one_clear_error(again, '--out', 'already exists')


def test_non_finite_loss_stops_the_run_naming_the_iteration(tiny_shapes, tmp_path):
    cfg = tiny_det_config(tmp_path, tiny_shapes, extra="model = dict(data_preprocessor=dict(mean=[float('nan')] * 3))")
    proc = run_tool('train.py', cfg, '--work-dir', tmp_path / 'nan')
    _assert_one_clear_error(proc, r'non-finite loss at iteration 1 \(epoch 1\)', 'loss_cls=nan',
                            "nonfinite_loss='skip'")
    assert not glob.glob(str(tmp_path / 'nan' / '*.pth'))


def test_annotation_naming_a_missing_image_is_one_clear_error(tiny_shapes, tmp_path):
    with open(tiny_shapes['det_train_ann']) as f:
        coco = json.load(f)
    coco['images'][1]['file_name'] = 'missing.png'
    ann = tmp_path / 'broken.json'
    ann.write_text(json.dumps(coco))
    cfg = tiny_det_config(tmp_path, tiny_shapes, train_ann=str(ann))
    proc = run_tool('train.py', cfg, '--work-dir', tmp_path / 'broken')
    _assert_one_clear_error(proc, re.escape(str(ann)), 'missing.png', f"image.*{coco['images'][1]['id']}",
                            "on_invalid='skip'")
    shutil.rmtree(tmp_path / 'broken', ignore_errors=True)


def test_model_argument_error_names_the_config_file_and_path(tiny_shapes, tmp_path):
    """Model code names only its class and argument; the tool adds the config file and the dotted config path."""
    cfg = tiny_det_config(tmp_path, tiny_shapes)
    proc = run_tool('train.py', cfg, '--work-dir', tmp_path / 'w', '--cfg-options', 'model.bbox_head.num_classes=0')
    _assert_one_clear_error(proc, '^error: ' + re.escape(cfg) +
                            r': model\.bbox_head: FCOSHead\(num_classes=0\): expected a positive int$')
    assert not glob.glob(str(tmp_path / 'w' / '*.pth'))
