"""CocoMetric, COCO result dumping and detection drawing, checked against plain pycocotools runs."""
import contextlib
import hashlib
import io
import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import require
from mmengine.evaluator import Evaluator
from mmengine.logging import MMLogger
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionzoo.engine.hooks import PredictionDrawHook
from visionzoo.evaluation.coco import CocoMetric, coco_evaluate, coco_results, coco_summary_table, load_coco_gt
from visionzoo.evaluation.dump import DumpPredictions
from visionzoo.registry import METRICS
from visionzoo.utils.errors import ConfigError, DatasetError
from visionzoo.visualization import class_color, draw_detection, draw_prediction


@pytest.fixture(scope='module', autouse=True)
def faster_coco_eval():
    """The second evaluator every metric here is held to: missing, each test of this file fails saying so."""
    return require('faster_coco_eval', "pip install 'faster-coco-eval>=1.6' (the test extra: pip install -e '.[test]')")


BACKENDS = ('pycocotools', 'faster_coco_eval')
AREAS = ((0, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e5 ** 2))  # small, medium, large as COCOeval defines them


def plain_cocoeval(gt_file_or_coco, entries, iou_type):
    """pycocotools as its README uses it; returns the 12 summary numbers and the printed summary lines."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        gt = gt_file_or_coco if isinstance(gt_file_or_coco, COCO) else COCO(gt_file_or_coco)
        ev = COCOeval(gt, gt.loadRes(entries), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:12]), [line for line in out.getvalue().splitlines() if line.startswith(' Average')]


@contextlib.contextmanager
def logged_messages():
    """Messages logged through mmengine's current logger while the block runs."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def metric_keys(prefix, iou_type):
    return [f'{prefix}/{iou_type}_{k}' for k in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')]


# ------------------------------------------------------------------------------------- the labelme COCO file
@pytest.fixture(scope='module')
def labelme_gt(labelme_coco):
    """The labelme file's ground truth turned into perfect predictions (boxes xywh -> xyxy, masks rasterised from
    the polygons with pycocotools, score 1), plus the category ids in file order."""
    with open(labelme_coco['ann_file']) as f:
        data = json.load(f)
    cat_ids = [c['id'] for c in data['categories']]
    preds = []
    for img in data['images']:
        anns = [a for a in data['annotations'] if a['image_id'] == img['id']]
        h, w = img['height'], img['width']
        masks = [mask_util.decode(mask_util.merge(mask_util.frPyObjects(a['segmentation'], h, w))) for a in anns]
        preds.append(dict(
            img_id=img['id'], ori_shape=(h, w),
            pred_bboxes=torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a['bbox'] for a in anns)]),
            pred_scores=torch.ones(len(anns)),
            pred_labels=torch.tensor([cat_ids.index(a['category_id']) for a in anns]),
            pred_masks=torch.from_numpy(np.stack(masks).astype(bool))))
    return dict(data=data, cat_ids=cat_ids, preds=preds, ann_file=labelme_coco['ann_file'])


def test_labelme_file_has_annotation_id_zero(labelme_gt):
    # what the id-0 tests below rely on
    assert min(a['id'] for a in labelme_gt['data']['annotations']) == 0


@pytest.mark.parametrize('backend', BACKENDS)
def test_ground_truth_as_predictions_scores_one(labelme_gt, backend):
    data = labelme_gt['data']
    with open(labelme_gt['ann_file'], 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    metric = CocoMetric(ann_file=labelme_gt['ann_file'], metric=['bbox', 'segm'], backend=backend)
    metric.dataset_meta = dict(cat_ids=labelme_gt['cat_ids'])
    metric.process(None, labelme_gt['preds'])
    results = metric.evaluate(len(labelme_gt['preds']))
    assert sorted(results) == sorted(metric_keys('coco', 'bbox') + metric_keys('coco', 'segm'))
    np.testing.assert_allclose(list(results.values()), 1.0, rtol=0, atol=1e-12)

    # all 12 numbers: 1 where the area range has ground truth (-1 where not); AR@1 is below 1 because an image
    # with several instances of one class contributes only one detection per class
    present = [any(lo <= a['area'] <= hi for a in data['annotations']) for lo, hi in AREAS]
    per_cat_imgs, per_cat_gts = {}, {}
    for a in data['annotations']:
        per_cat_imgs.setdefault(a['category_id'], set()).add(a['image_id'])
        per_cat_gts[a['category_id']] = per_cat_gts.get(a['category_id'], 0) + 1
    ar_at_1 = np.mean([len(per_cat_imgs[c]) / per_cat_gts[c] for c in per_cat_gts])
    area_values = [1.0 if p else -1.0 for p in present]
    expected = [1.0, 1.0, 1.0, *area_values, ar_at_1, 1.0, 1.0, *area_values]
    entries = [e for pred in labelme_gt['preds'] for e in coco_results(pred, labelme_gt['cat_ids'])]
    for iou_type in ('bbox', 'segm'):
        stats = coco_evaluate(load_coco_gt(labelme_gt['ann_file']), entries, iou_type, backend).stats[:12]
        np.testing.assert_allclose(stats, expected, rtol=0, atol=1e-12, err_msg=iou_type)
    with open(labelme_gt['ann_file'], 'rb') as f:  # renumbering happened in memory only
        assert hashlib.sha256(f.read()).hexdigest() == digest


def test_plain_pycocotools_miscounts_annotation_id_zero(labelme_gt):
    """The bug CocoMetric works around is real: the same perfect predictions on the file as it is score < 1."""
    entries = [e for pred in labelme_gt['preds'] for e in coco_results(pred, labelme_gt['cat_ids'], masks=False)]
    stats, _ = plain_cocoeval(labelme_gt['ann_file'], entries, 'bbox')
    assert stats[0] < 0.99 and stats[1] < 0.99


def test_load_coco_gt_renumbers_only_bad_ids(labelme_gt, tmp_path):
    gt = load_coco_gt(labelme_gt['ann_file'])
    assert [a['id'] for a in gt['annotations']] == list(range(1, len(gt['annotations']) + 1))
    good = dict(labelme_gt['data'], annotations=[dict(a, id=10 * a['id'] + 5) for a in gt['annotations']])
    path = tmp_path / 'good.json'
    path.write_text(json.dumps(good))
    assert [a['id'] for a in load_coco_gt(str(path))['annotations']] == [a['id'] for a in good['annotations']]
    with pytest.raises(DatasetError, match='not found'):
        load_coco_gt(str(tmp_path / 'missing.json'))
    (tmp_path / 'bad.json').write_text('{"images": []}')
    with pytest.raises(DatasetError, match='annotations'):
        load_coco_gt(str(tmp_path / 'bad.json'))


@pytest.mark.parametrize('backend', BACKENDS)
def test_zero_predictions_give_zero_ap(labelme_gt, backend):
    metric = CocoMetric(ann_file=labelme_gt['ann_file'], metric=['bbox', 'segm'], backend=backend)
    metric.dataset_meta = dict(cat_ids=labelme_gt['cat_ids'])
    empty = [dict(p, pred_bboxes=torch.zeros(0, 4), pred_scores=torch.zeros(0), pred_labels=torch.zeros(0).long(),
                  pred_masks=torch.zeros(0, *p['ori_shape'], dtype=torch.bool)) for p in labelme_gt['preds']]
    metric.process(None, empty)
    with pytest.warns(UserWarning, match='no bbox predictions'):
        results = metric.evaluate(len(empty))
    assert results == {k: 0.0 for k in metric_keys('coco', 'bbox') + metric_keys('coco', 'segm')}


def test_unknown_image_id_is_an_error(labelme_gt):
    metric = CocoMetric(ann_file=labelme_gt['ann_file'])
    metric.dataset_meta = dict(cat_ids=labelme_gt['cat_ids'])
    metric.process(None, [dict(labelme_gt['preds'][0], img_id=4242)])
    with pytest.raises(DatasetError, match=r'annotations\.json.*image id 4242'):
        metric.evaluate(1)


def test_prefix_classes_lookup_and_classwise_log(labelme_gt):
    names = [c['name'] for c in labelme_gt['data']['categories']]
    reordered = names[::-1]  # labels index the classes; category ids are found by name in the file
    preds = [dict(p, pred_labels=torch.tensor([reordered.index(names[int(label)]) for label in p['pred_labels']]))
             for p in labelme_gt['preds']]
    metric = CocoMetric(ann_file=labelme_gt['ann_file'], prefix='val', classwise=True)
    metric.dataset_meta = dict(classes=tuple(reordered))
    metric.process(None, preds)
    with logged_messages() as messages:
        results = metric.evaluate(len(preds))
    assert list(results) == metric_keys('val', 'bbox')
    np.testing.assert_allclose(list(results.values()), 1.0, atol=1e-12)
    log = '\n'.join(messages)
    assert 'Evaluate annotation type *bbox*' in log and 'maxDets=  1 ] = 0.806' in log
    person = next(line for line in log.splitlines() if line.startswith('| person '))
    assert [cell.strip() for cell in person.split('|')[2:8]] == ['1.000'] * 6
    assert next(line for line in log.splitlines() if line.startswith('| cat ')).count('nan') == 6

    metric = CocoMetric(ann_file=labelme_gt['ann_file'])
    metric.dataset_meta = dict(classes=('person', 'unicorn'))
    with pytest.raises(DatasetError, match="'unicorn'"):
        metric.process(None, preds)


def test_bad_arguments():
    with pytest.raises(ConfigError, match='metric'):
        CocoMetric(metric='proposal')
    with pytest.raises(ConfigError, match='backend'):
        CocoMetric(backend='detectron2')
    with pytest.raises(ConfigError, match='iou_thrs'):
        CocoMetric(iou_thrs=[0.5, 1.5])
    metric = CocoMetric(metric='segm')
    metric.dataset_meta = dict(cat_ids=[1])
    pred = dict(img_id=1, pred_bboxes=torch.zeros(1, 4), pred_scores=torch.ones(1), pred_labels=torch.zeros(1).long())
    with pytest.raises(ConfigError, match='pred_masks'):
        metric.process(None, [pred])
    with pytest.raises(ConfigError, match='label 3'):
        coco_results(dict(pred, pred_labels=torch.tensor([3])), [1, 2])
    metric = CocoMetric()
    with pytest.raises(ConfigError, match='ann_file'):
        metric.compute_metrics([])


# -------------------------------------------------------------------------------------------- a generated set
def generated_set(tmp_path, n_images=60, seed=0):
    """A COCO file (ids from 1, five categories with non-contiguous ids, some crowd boxes) and noisy predictions:
    jittered copies of most ground-truth boxes (sometimes with the wrong class), random false positives, float32
    scores. Coordinates are multiples of 1/4, so xyxy <-> xywh is exact in float32 and float64."""
    rng = np.random.default_rng(seed)
    cat_ids = [3, 7, 11, 20, 42]
    q = lambda v: np.round(np.asarray(v, dtype=np.float64) * 4) / 4  # noqa: E731
    images, annotations, preds, plain_entries = [], [], [], []
    for img_id in range(1, n_images + 1):
        h, w = (int(v) for v in rng.integers(160, 320, size=2))
        images.append(dict(id=img_id, height=h, width=w, file_name=f'{img_id}.jpg'))
        boxes, labels = [], []
        for _ in range(rng.integers(0, 9)):
            bw, bh = q(rng.uniform(6, 0.7 * w)), q(rng.uniform(6, 0.7 * h))
            x, y = q(rng.uniform(0, w - bw)), q(rng.uniform(0, h - bh))
            label = int(rng.integers(len(cat_ids)))
            annotations.append(dict(id=len(annotations) + 1, image_id=img_id, category_id=cat_ids[label],
                                    bbox=[x, y, bw, bh], area=float(bw * bh), iscrowd=int(rng.random() < 0.05),
                                    segmentation=[[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]))
            if rng.random() < 0.85:
                jitter = q(rng.normal(0, 0.08, size=4) * [bw, bh, bw, bh])
                x1, y1 = x + jitter[0], y + jitter[1]
                boxes.append([x1, y1, x1 + max(bw + jitter[2], 1), y1 + max(bh + jitter[3], 1)])
                labels.append(label if rng.random() < 0.9 else int(rng.integers(len(cat_ids))))
        for _ in range(rng.integers(0, 5)):
            x1, y1 = q(rng.uniform(0, w - 10)), q(rng.uniform(0, h - 10))
            boxes.append([x1, y1, q(rng.uniform(x1 + 2, w)), q(rng.uniform(y1 + 2, h))])
            labels.append(int(rng.integers(len(cat_ids))))
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = rng.random(len(boxes)).astype(np.float32)
        masks = np.zeros((len(boxes), h, w), dtype=bool)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes):
            mask[max(0, int(y1)):max(0, int(np.ceil(y2))), max(0, int(x1)):max(0, int(np.ceil(x2)))] = True
        order = np.argsort(-scores, kind='stable')
        preds.append(dict(img_id=img_id, ori_shape=(h, w), pred_bboxes=torch.tensor(boxes[order], dtype=torch.float32),
                          pred_scores=torch.from_numpy(scores[order]), pred_labels=torch.tensor(labels).long()[order],
                          pred_masks=torch.from_numpy(masks[order])))
        for i in order:  # the reference entries, written independently of coco_results
            x1, y1, x2, y2 = boxes[i].tolist()
            rle = mask_util.encode(np.asfortranarray(masks[i].astype(np.uint8)))
            plain_entries.append(dict(image_id=img_id, category_id=cat_ids[labels[i]], score=float(scores[i]),
                                      bbox=[x1, y1, x2 - x1, y2 - y1], segmentation=rle))
    categories = [dict(id=c, name=f'class{c}') for c in cat_ids]
    ann_file = tmp_path / 'generated.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return dict(ann_file=str(ann_file), cat_ids=cat_ids, preds=preds, entries=plain_entries,
                classes=tuple(c['name'] for c in categories))


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    return generated_set(tmp_path_factory.mktemp('coco'))


def test_generated_set_is_not_trivial(generated):
    with open(generated['ann_file']) as f:
        data = json.load(f)
    assert len(data['annotations']) > 200 and len(generated['entries']) > 250
    assert any(a['iscrowd'] for a in data['annotations'])


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_metric_equals_plain_pycocotools_and_faster_coco_eval(generated, iou_type):
    keep = {'bbox': 'bbox', 'segm': 'segmentation'}[iou_type]  # mmdet evaluates masks without their boxes
    plain = [dict(image_id=e['image_id'], category_id=e['category_id'], score=e['score'], **{keep: e[keep]})
             for e in generated['entries']]
    expected, printed = plain_cocoeval(generated['ann_file'], plain, iou_type)
    assert 0.1 < expected[0] < 0.9  # neither trivial nor hopeless

    gt = load_coco_gt(generated['ann_file'])
    entries = [e for pred in generated['preds'] for e in coco_results(pred, generated['cat_ids'])]
    ours = coco_evaluate(gt, entries, iou_type).stats[:12]
    np.testing.assert_array_equal(ours, expected)
    assert coco_summary_table(ours, iou_type).splitlines() == [f'Evaluate annotation type *{iou_type}*', *printed]
    faster = coco_evaluate(load_coco_gt(generated['ann_file']), entries, iou_type, 'faster_coco_eval').stats[:12]
    np.testing.assert_allclose(faster, expected, rtol=0, atol=1e-12)

    for backend in BACKENDS:
        metric = CocoMetric(ann_file=generated['ann_file'], metric=iou_type, backend=backend)
        metric.dataset_meta = dict(cat_ids=generated['cat_ids'])
        for i in range(0, len(generated['preds']), 8):
            metric.process(None, generated['preds'][i:i + 8])
        results = metric.evaluate(len(generated['preds']))
        np.testing.assert_allclose(list(results.values()), expected[:6], rtol=0, atol=1e-12, err_msg=backend)


def test_custom_iou_thresholds(generated):
    plain = [{k: v for k, v in e.items() if k != 'segmentation'} for e in generated['entries']]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(generated['ann_file'])
        ev = COCOeval(gt, gt.loadRes(plain), 'bbox')
        ev.params.iouThrs = np.array([0.3, 0.5, 0.7])
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metric = CocoMetric(ann_file=generated['ann_file'], iou_thrs=[0.3, 0.5, 0.7])
    metric.dataset_meta = dict(cat_ids=generated['cat_ids'])
    metric.process(None, generated['preds'])
    results = metric.evaluate(len(generated['preds']))
    np.testing.assert_array_equal(list(results.values()), ev.stats[:6])
    assert results['coco/bbox_mAP_75'] == -1  # 0.75 is not among the thresholds


def test_subset_of_images_is_evaluated_alone(generated):
    """Only the images that were predicted on count, as in mmdet (a partial run is not penalised for the rest)."""
    preds = generated['preds'][:20]
    plain = [{k: v for k, v in e.items() if k != 'segmentation'} for e in generated['entries'] if e['image_id'] <= 20]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(generated['ann_file'])
        ev = COCOeval(gt, gt.loadRes(plain), 'bbox')
        ev.params.imgIds = list(range(1, 21))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metric = CocoMetric(ann_file=generated['ann_file'])
    metric.dataset_meta = dict(cat_ids=generated['cat_ids'])
    metric.process(None, preds)
    np.testing.assert_array_equal(list(metric.evaluate(len(preds)).values()), ev.stats[:6])


def test_evaluator_integration(generated):
    """Through mmengine's Evaluator, built from the registry, with ann_file and classes from dataset_meta."""
    evaluator = Evaluator([METRICS.build(dict(type='CocoMetric', metric=['bbox', 'segm'])),
                           METRICS.build(dict(type='CocoMetric', backend='faster_coco_eval', prefix='fast'))])
    evaluator.dataset_meta = dict(classes=generated['classes'], ann_file=generated['ann_file'])
    for i in range(0, len(generated['preds']), 16):
        evaluator.process(data_samples=generated['preds'][i:i + 16])
    results = evaluator.evaluate(len(generated['preds']))
    assert sorted(results) == sorted(metric_keys('coco', 'bbox') + metric_keys('coco', 'segm')
                                     + metric_keys('fast', 'bbox'))
    for key in metric_keys('coco', 'bbox'):
        assert results[key] == pytest.approx(results[key.replace('coco/', 'fast/')], abs=1e-12)
    plain = [{k: v for k, v in e.items() if k != 'segmentation'} for e in generated['entries']]
    assert results['coco/bbox_mAP'] == plain_cocoeval(generated['ann_file'], plain, 'bbox')[0][0]


# ------------------------------------------------------------------------------------------------- dumping
def test_dump_predictions_coco_results_load_and_score_the_same(generated, tmp_path):
    out_file = str(tmp_path / 'preds.json')
    dump = DumpPredictions(out_file)
    dump.dataset_meta = dict(cat_ids=generated['cat_ids'])
    dump.process(None, generated['preds'])
    assert dump.evaluate(len(generated['preds'])) == {}
    with open(out_file) as f:
        written = json.load(f)
    assert isinstance(written, list) and len(written) == len(generated['entries'])
    assert set(written[0]) == {'image_id', 'category_id', 'bbox', 'score', 'segmentation'}
    assert isinstance(written[0]['segmentation']['counts'], str)

    metric = CocoMetric(ann_file=generated['ann_file'])
    metric.dataset_meta = dict(cat_ids=generated['cat_ids'])
    metric.process(None, generated['preds'])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(generated['ann_file'])
        ev = COCOeval(gt, gt.loadRes(out_file), 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    np.testing.assert_array_equal(list(metric.evaluate(len(generated['preds'])).values()), ev.stats[:6])

    with pytest.raises(ConfigError, match='already exists'):
        DumpPredictions(out_file)
    bare = DumpPredictions(str(tmp_path / 'bare.json'))
    with pytest.raises(ConfigError, match='cat_ids'):
        bare.process(None, generated['preds'][:1])


def test_dump_predictions_keeps_classification_output(tmp_path):
    out_file = str(tmp_path / 'cls.json')
    dump = DumpPredictions(out_file)
    dump.process(None, [dict(img_path='a.png', pred_label=torch.tensor(2), pred_score=torch.tensor([0.1, 0.2, 0.7]))])
    dump.evaluate(1)
    with open(out_file) as f:
        written = json.load(f)
    assert written[0]['img_path'] == 'a.png' and written[0]['pred_label'] == 2
    np.testing.assert_allclose(written[0]['pred_score'], [0.1, 0.2, 0.7], rtol=1e-6)


# ------------------------------------------------------------------------------------------------- drawing
def drawing_case():
    img = np.full((100, 120, 3), 50, dtype=np.uint8)
    mask = np.zeros((2, 100, 120), dtype=bool)
    mask[0, 30:70, 20:50] = True
    pred = dict(pred_bboxes=torch.tensor([[10.0, 20.0, 60.0, 80.0], [80.0, 10.0, 110.0, 40.0]]),
                pred_scores=torch.tensor([0.9, 0.1]), pred_labels=torch.tensor([1, 2]),
                pred_masks=torch.from_numpy(mask))
    return img, pred


def test_draw_detection_boxes_masks_and_threshold():
    img, pred = drawing_case()
    out = draw_detection(img, pred, classes=('a', 'b', 'c'), min_side=0)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (img == 50).all()  # the input is not drawn on
    color = np.array(class_color(1), dtype=np.float64)
    np.testing.assert_array_equal(out[50, 35], np.round(50 * 0.5 + color * 0.5))  # translucent mask
    assert (out[75, 15] == 50).all()  # inside the box, outside the mask: untouched
    np.testing.assert_array_equal(out[50, 10], class_color(1))  # the box edge
    tag = out[4:20, 10:70]  # 'b 0.90' in white on a tag of the class colour above the box
    assert (tag == 255).all(axis=-1).any() and (tag == class_color(1)).all(axis=-1).any()
    assert (out[5:45, 75:115] == 50).all()  # the 0.1 detection is below score_thr=0.3
    np.testing.assert_array_equal(draw_detection(img, pred, score_thr=0.05, min_side=0)[10, 95], class_color(2))
    np.testing.assert_array_equal(draw_detection(img, pred, score_thr=0.95, min_side=0), img)

    big = draw_detection(img, pred, min_side=200)  # small images are upscaled, boxes and masks with them
    assert big.shape == (200, 240, 3)
    np.testing.assert_array_equal(big[100, 70], np.round(50 * 0.5 + color * 0.5))
    np.testing.assert_array_equal(draw_prediction(img, pred, ('a', 'b', 'c')),
                                  draw_detection(img, pred, ('a', 'b', 'c')))


def test_tags_stay_inside_the_image_and_do_not_overlap():
    from visionzoo.visualization import place_tags
    # three near-identical boxes at the top-left corner, one sticking out on the right, one at the bottom
    boxes = [(0, 0, 40, 40), (1, 1, 41, 41), (2, 0, 40, 39), (90, 30, 130, 60), (10, 95, 60, 100)]
    sizes = [(50, 14)] * len(boxes)
    tags = place_tags(boxes, sizes, (100, 120))
    for x, y, w, h in tags:
        assert 0 <= x and x + w <= 120 and 0 <= y and y + h <= 100, (x, y, w, h)
    for i in range(len(tags)):
        for j in range(i):
            a, b = tags[i], tags[j]
            assert not (a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]), \
                (i, j, tags)
    assert tags[0] == (0, 0, 50, 14)  # the most important tag first: no room above, so inside at the top


def test_prediction_draw_hook_passes_score_thr(tmp_path):
    img, pred = drawing_case()
    path = str(tmp_path / 'img.png')
    cv2.imwrite(path, img)
    hook = PredictionDrawHook(str(tmp_path / 'show'), score_thr=0.05)
    os.makedirs(hook.show_dir)
    hook.after_test_iter(None, 0, outputs=[dict(pred, img_path=path)])
    drawn = cv2.imread(os.path.join(hook.show_dir, f'{tmp_path.name}_img.png'))
    np.testing.assert_array_equal(drawn, draw_detection(img, pred, score_thr=0.05))
