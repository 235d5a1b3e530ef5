"""IoUMetric against a hand-computed confusion matrix, a dense per-pixel formulation, and real mmseg 1.2.2 results.

``tests/data/mmseg_ref/iou_random.pt`` holds six random label/prediction maps (uint8; class 5 only predicted, class 6
nowhere, ~10% ignored pixels) and, for four IoUMetric configurations, mmseg's ``compute_metrics`` output, its
per-class ``total_area_to_metrics`` arrays and its summed areas. Recorded once, with mmseg 1.2.2, mmcv 2.x and
mmengine installed into /tmp/mmseg-pkgs (``pip install --target /tmp/mmseg-pkgs mmsegmentation==1.2.2 ...``), from
the repository root::

    PYTHONPATH=/tmp/mmseg-pkgs .venv/bin/python record.py

where record.py is::

    import numpy as np, torch, mmseg
    from mmseg.evaluation.metrics import IoUMetric
    g = torch.Generator().manual_seed(0)
    num_classes = 7
    preds, labels = [], []
    for i in range(6):
        h, w = 24 + 4 * i, 40 - 2 * i
        label = torch.randint(0, 5, (h, w), generator=g)
        label[torch.rand(h, w, generator=g) < 0.1] = 255
        pred = label.clone()
        noise = torch.rand(h, w, generator=g) < 0.4
        pred[noise] = torch.randint(0, 6, (int(noise.sum()),), generator=g)
        pred[pred == 255] = torch.randint(0, 5, (int((pred == 255).sum()),), generator=g)
        preds.append(pred.to(torch.uint8))
        labels.append(label.to(torch.uint8))
    classes = tuple(f'class{k}' for k in range(num_classes))
    configs = [dict(iou_metrics=['mIoU']), dict(iou_metrics=['mIoU', 'mDice', 'mFscore']),
               dict(iou_metrics=['mFscore'], beta=2), dict(iou_metrics=['mIoU', 'mDice'], nan_to_num=-1)]
    out = dict(mmseg_version=mmseg.__version__, classes=classes, preds=preds, labels=labels, configs=configs,
               results=[])
    for cfg in configs:
        metric = IoUMetric(**cfg)
        metric.dataset_meta = dict(classes=classes)
        for start, stop in ((0, 2), (2, 5), (5, 6)):
            metric.process(None, [dict(pred_sem_seg=dict(data=p[None].long()), gt_sem_seg=dict(data=l[None].long()))
                                  for p, l in zip(preds[start:stop], labels[start:stop])])
        areas = [sum(r[k] for r in metric.results) for k in range(4)]
        per_class = IoUMetric.total_area_to_metrics(*areas, metric.metrics, metric.nan_to_num, metric.beta)
        summary = metric.compute_metrics(metric.results)
        out['results'].append(dict(summary={k: float(v) for k, v in summary.items()},
                                   per_class={k: torch.as_tensor(np.asarray(v, dtype=np.float64))
                                              for k, v in per_class.items()},
                                   areas=[a.double() for a in areas]))
    torch.save(out, 'tests/data/mmseg_ref/iou_random.pt')
"""
import math
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator

from visionzoo.evaluation import IoUMetric
from visionzoo.evaluation.iou_metric import area_histogram, histogram_to_metrics, per_class_table
from visionzoo.registry import METRICS
from visionzoo.utils.errors import ConfigError

REF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data', 'mmseg_ref',
                   'iou_random.pt')


def _run(metric, pairs, batch=2):
    for i in range(0, len(pairs), batch):
        metric.process(None, [dict(pred_sem_seg=p, gt_sem_seg=g) for p, g in pairs[i:i + batch]])
    return metric.compute_metrics(metric.results)


def test_hand_computed_confusion_matrix():
    """4 classes: class 3 absent from both (NaN, out of the means); 255 pixels ignored whatever is predicted."""
    gt = torch.tensor([[0, 0, 0, 1, 1, 255],
                       [2, 2, 1, 1, 255, 255]])
    pred = torch.tensor([[0, 0, 1, 1, 1, 3],
                         [2, 0, 1, 2, 0, 2]])
    # confusion (rows gt, cols pred) over the 9 labelled pixels:
    #   gt 0: pred 0 x2, pred 1 x1;  gt 1: pred 1 x3, pred 2 x1;  gt 2: pred 2 x1, pred 0 x1
    # IoU = TP / (row + col - TP): class 0 2/(3+3-2)=0.5, class 1 3/(4+4-3)=0.6, class 2 1/(2+2-1)=1/3, class 3 NaN
    # Acc = TP / row: 2/3, 3/4, 1/2; aAcc = 6/9
    metric = IoUMetric(iou_metrics=['mIoU', 'mDice', 'mFscore'])
    metric.dataset_meta = dict(classes=('a', 'b', 'c', 'd'))
    out = _run(metric, [(pred, gt)])
    r2 = lambda v: round(v * 100, 2)  # noqa: E731
    assert out['aAcc'] == r2(6 / 9)
    assert out['mIoU'] == r2((0.5 + 0.6 + 1 / 3) / 3)
    assert out['mAcc'] == r2((2 / 3 + 3 / 4 + 1 / 2) / 3)
    dice = [2 * 2 / 6, 2 * 3 / 8, 2 * 1 / 4]  # 2 TP / (row + col)
    assert out['mDice'] == r2(sum(dice) / 3)
    precision, recall = [2 / 3, 3 / 4, 1 / 2], [2 / 3, 3 / 4, 1 / 2]  # col sums equal row sums here
    assert out['mPrecision'] == r2(sum(precision) / 3) and out['mRecall'] == r2(sum(recall) / 3)
    assert out['mFscore'] == r2(sum(2 * p * r / (p + r) for p, r in zip(precision, recall)) / 3)
    # rows intersection, union, prediction, label; class d is nan in the per-class values and table
    hist = area_histogram(pred, gt, 4, 255)
    assert hist.tolist() == [[2, 3, 1, 0], [4, 5, 3, 0], [3, 4, 2, 0], [3, 4, 2, 0]]
    per_class = histogram_to_metrics(hist.numpy(), ['mIoU'])
    assert np.isnan(per_class['IoU'][3]) and np.isnan(per_class['Acc'][3])
    per_class.pop('aAcc')
    table = per_class_table(('a', 'b', 'c', 'd'), per_class).splitlines()
    assert table[1].split() == ['|', 'Class', '|', 'IoU', '|', 'Acc', '|']
    assert table[3].split() == ['|', 'a', '|', '50.00', '|', '66.67', '|']
    assert table[6].split() == ['|', 'd', '|', 'nan', '|', 'nan', '|']
    # nan_to_num puts absent classes into the mean
    metric = IoUMetric(nan_to_num=0)
    metric.dataset_meta = dict(classes=('a', 'b', 'c', 'd'))
    assert _run(metric, [(pred, gt)])['mIoU'] == r2((0.5 + 0.6 + 1 / 3) / 4)


def _dense_iou(pairs, num_classes, ignore):
    """Per-class IoU from one flat confusion matrix over every labelled pixel of every image."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    for pred, gt in pairs:
        p, g = pred.numpy().ravel(), gt.numpy().ravel()
        keep = (g != ignore) & (g < num_classes) & (p < num_classes)
        np.add.at(conf, (g[keep], p[keep]), 1)
    tp = np.diag(conf).astype(np.float64)
    with np.errstate(invalid='ignore', divide='ignore'):
        return tp / (conf.sum(0) + conf.sum(1) - tp), tp.sum() / conf.sum(1).sum()


def test_matches_dense_formulation_and_ignore_from_dataset():
    g = torch.Generator().manual_seed(1)
    pairs = []
    for _ in range(5):
        gt = torch.randint(0, 6, (17, 23), generator=g)
        gt[gt == 5] = 7  # the dataset's ignore index
        pred = torch.where(torch.rand(17, 23, generator=g) < 0.5, gt, torch.randint(0, 5, (17, 23), generator=g))
        pred[pred == 7] = 0
        pairs.append((pred, gt))
    iou, acc = _dense_iou(pairs, 6, 7)  # class 5: nowhere
    metric = IoUMetric()  # ignore_index from dataset_meta
    metric.dataset_meta = dict(classes=tuple('abcdef'), ignore_index=7)
    out = _run(metric, pairs, batch=3)
    assert out['mIoU'] == round(float(np.nanmean(iou)) * 100, 2) and out['aAcc'] == round(acc * 100, 2)
    assert math.isnan(iou[5])
    # the metric's own ignore_index wins
    metric = IoUMetric(ignore_index=0)
    metric.dataset_meta = dict(classes=tuple('abcdef'), ignore_index=7)
    assert _run(metric, pairs)['mIoU'] != out['mIoU']


def test_state_size_is_independent_of_the_number_of_images():
    g = torch.Generator().manual_seed(2)
    metric = IoUMetric()
    metric.dataset_meta = dict(classes=tuple(str(k) for k in range(150)))
    sizes = []
    for n in (1, 10, 40):
        metric.results.clear()
        for _ in range(n):
            gt = torch.randint(0, 150, (64, 64), generator=g)
            metric.process(None, [dict(pred_sem_seg=gt.clone(), gt_sem_seg=gt)])
        sizes.append(len(pickle.dumps(metric.results)))
        assert len(metric.results) == 1 and metric.results[0].shape == (4, 150)
        assert int(metric.results[0][3].sum()) == n * 64 * 64  # every labelled pixel counted
    assert sizes[0] == sizes[1] == sizes[2]


def test_through_mmengine_evaluator_and_registry():
    """Evaluator.process / evaluate: the collected per-process histograms are summed."""
    assert METRICS.get('IoUMetric') is IoUMetric
    evaluator = Evaluator(METRICS.build(dict(type='IoUMetric', iou_metrics=['mIoU'])))
    evaluator.dataset_meta = dict(classes=('a', 'b'))
    gt = torch.tensor([[0, 1], [1, 255]])
    evaluator.process([dict(pred_sem_seg=torch.tensor([[0, 1], [0, 0]]), gt_sem_seg=gt)])
    evaluator.process([dict(pred_sem_seg=torch.tensor([[1, 1], [1, 1]]), gt_sem_seg=gt)])
    out = evaluator.evaluate(2)
    # class a: TP 1, gt 2, pred 2 -> 1/3; class b: TP 3, gt 4, pred 4 -> 3/5
    assert out == dict(aAcc=round(4 / 6 * 100, 2), mIoU=round((1 / 3 + 3 / 5) / 2 * 100, 2),
                       mAcc=round((1 / 2 + 3 / 4) / 2 * 100, 2))


def test_bad_arguments_and_inputs():
    with pytest.raises(ConfigError, match='iou_metrics'):
        IoUMetric(iou_metrics=['mAP'])
    with pytest.raises(ConfigError, match='beta'):
        IoUMetric(beta=0)
    metric = IoUMetric()
    with pytest.raises(ConfigError, match="no 'classes'"):
        metric.process(None, [dict(pred_sem_seg=torch.zeros(2, 2), gt_sem_seg=torch.zeros(2, 2))])
    metric.dataset_meta = dict(classes=('a',))
    with pytest.raises(ConfigError, match=r'\(2, 2\) and label \(3, 2\)'):
        metric.process(None, [dict(pred_sem_seg=torch.zeros(2, 2), gt_sem_seg=torch.zeros(3, 2))])
    with pytest.raises(ConfigError, match="no 'gt_sem_seg'"):
        metric.process(None, [dict(pred_sem_seg=torch.zeros(2, 2))])


def test_matches_recorded_mmseg():
    ref = torch.load(REF, weights_only=True)
    assert ref['mmseg_version'] == '1.2.2'
    pairs = [(p.long(), g.long()) for p, g in zip(ref['preds'], ref['labels'])]
    # the recorded data has what the test is about: ignored pixels, a predicted-only class and an absent one
    assert all((g == 255).any() for _, g in pairs)
    assert any((p == 5).any() for p, _ in pairs) and not any((g == 5).any() for _, g in pairs)
    assert not any((p == 6).any() or (g == 6).any() for p, g in pairs)
    for cfg, want in zip(ref['configs'], ref['results']):
        metric = IoUMetric(**cfg)
        metric.dataset_meta = dict(classes=ref['classes'])
        got = _run(metric, pairs, batch=4)
        assert got.keys() == want['summary'].keys(), cfg
        for key, value in want['summary'].items():
            assert got[key] == pytest.approx(value, abs=1e-4, nan_ok=True), (cfg, key)  # mmseg: float32
        hist = metric.results[0].double()
        for k in range(4):
            assert torch.equal(hist[k], want['areas'][k]), (cfg, k)
        per_class = histogram_to_metrics(hist.numpy(), metric.metrics, metric.nan_to_num, metric.beta)
        assert per_class.keys() == want['per_class'].keys()
        for key, value in want['per_class'].items():
            np.testing.assert_allclose(per_class[key], value.numpy(), rtol=1e-6, equal_nan=True, err_msg=key)


def test_shapes_seg_data_into_the_metric(tiny_shapes):
    """ShapesSegDataset items, batched by det_collate, evaluated with the dataset's metainfo."""
    from conftest import TINY_SHAPES
    from torch.utils.data import DataLoader

    from visionzoo.datasets import ShapesSegDataset, det_collate
    ds = ShapesSegDataset(split='val', data_root=tiny_shapes['data_root'], shapes_cfg=TINY_SHAPES, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')])
    samples = [s for batch in DataLoader(ds, batch_size=2, collate_fn=det_collate) for s in batch['data_samples']]
    perfect, background = IoUMetric(), IoUMetric()
    perfect.dataset_meta = background.dataset_meta = ds.metainfo
    for s in samples:
        perfect.process(None, [dict(s, pred_sem_seg=s['gt_sem_seg'].clone())])
        background.process(None, [dict(s, pred_sem_seg=torch.zeros_like(s['gt_sem_seg']))])
    assert _run(perfect, []) == dict(aAcc=100.0, mIoU=100.0, mAcc=100.0)
    iou, acc = _dense_iou([(torch.zeros_like(s['gt_sem_seg']), s['gt_sem_seg']) for s in samples], 5, 255)
    present = [k for k in range(5) if any((s['gt_sem_seg'] == k).any() for s in samples)]
    assert np.allclose(iou[present[1:]], 0) and np.isnan(iou[[k for k in range(5) if k not in present]]).all()
    assert _run(background, []) == dict(aAcc=round(acc * 100, 2), mIoU=round(iou[0] / len(present) * 100, 2),
                                        mAcc=round(100 / len(present), 2))
