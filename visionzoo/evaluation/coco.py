"""COCO box and mask AP with pycocotools or faster-coco-eval (mmdet's metric names).

Predictions follow the detection contract: one dict per image with ``img_id``, ``pred_bboxes`` (xyxy, original
pixels), ``pred_scores``, ``pred_labels`` (0-based) and optionally ``pred_masks`` (bool, (K, H, W)). They are turned
into COCO result entries as soon as they arrive, masks as compressed RLE, so a test run keeps only small records.
"""
import contextlib
import io
import json
import os
import warnings
from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from pycocotools import mask as mask_util

from ..registry import METRICS
from ..utils.errors import ConfigError, DatasetError

__all__ = ['CocoMetric', 'coco_results', 'coco_summary_table', 'coco_evaluate', 'load_coco_gt']

BACKENDS = ('pycocotools', 'faster_coco_eval')
IOU_TYPES = ('bbox', 'segm')
# the first six numbers of COCO's summary, named as mmdet names them
METRIC_ITEMS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
# (title, iou threshold or None for the range, area, maxDets) of COCO's 12 summary lines, in stats order
_SUMMARY_LINES = (
    ('AP', None, 'all', 100), ('AP', 0.5, 'all', 100), ('AP', 0.75, 'all', 100),
    ('AP', None, 'small', 100), ('AP', None, 'medium', 100), ('AP', None, 'large', 100),
    ('AR', None, 'all', 1), ('AR', None, 'all', 10), ('AR', None, 'all', 100),
    ('AR', None, 'small', 100), ('AR', None, 'medium', 100), ('AR', None, 'large', 100),
)


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def coco_results(pred: dict, cat_ids: Sequence[int], masks: bool = True) -> list:
    """COCO result entries (``image_id, category_id, bbox`` as xywh, ``score``) of one image's prediction.

    With ``masks`` and ``pred_masks`` in ``pred`` each entry also gets ``segmentation``, a compressed RLE whose
    ``counts`` is a str (JSON-ready). ``cat_ids[label]`` is the COCO category id of label ``label``.
    """
    img_id = int(pred['img_id'])
    boxes = _numpy(pred['pred_bboxes']).astype(np.float64).reshape(-1, 4)
    scores = _numpy(pred['pred_scores']).astype(np.float64).reshape(-1)
    labels = _numpy(pred['pred_labels']).astype(np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f'coco_results: image {img_id} has {len(boxes)} boxes, {len(scores)} scores and '
                         f'{len(labels)} labels; expected one of each per detection')
    bad = labels[(labels < 0) | (labels >= len(cat_ids))]
    if len(bad):
        raise ConfigError(f'coco_results: image {img_id} has a prediction with label {int(bad[0])}, but there are '
                          f'{len(cat_ids)} category ids (labels must be 0..{len(cat_ids) - 1})')
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    entries = [dict(image_id=img_id, category_id=int(cat_ids[label]), bbox=box, score=score)
               for label, box, score in zip(labels.tolist(), xywh.tolist(), scores.tolist())]
    if masks and 'pred_masks' in pred:
        pred_masks = _numpy(pred['pred_masks'])
        if len(pred_masks) != len(entries):
            raise ValueError(f'coco_results: image {img_id} has {len(pred_masks)} masks for {len(entries)} boxes')
        for entry, mask in zip(entries, pred_masks):
            rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
            rle['counts'] = rle['counts'].decode('ascii')
            entry['segmentation'] = rle
    return entries


def coco_summary_table(stats: Sequence[float], iou_type: str, iou_thrs: Optional[Sequence[float]] = None) -> str:
    """COCO's printed summary of the 12 ``stats`` (as pycocotools' ``summarize`` prints it), under a heading line."""
    thrs = np.asarray(iou_thrs if iou_thrs is not None else (0.5, 0.95))
    lines = [f'Evaluate annotation type *{iou_type}*']
    for value, (kind, iou, area, max_dets) in zip(stats, _SUMMARY_LINES):
        title = 'Average Precision' if kind == 'AP' else 'Average Recall'
        iou_str = f'{thrs[0]:0.2f}:{thrs[-1]:0.2f}' if iou is None else f'{iou:0.2f}'
        lines.append(f' {title:<18} ({kind}) @[ IoU={iou_str:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = '
                     f'{value:0.3f}')
    return '\n'.join(lines)


def load_coco_gt(ann_file: str) -> dict:
    """Read a COCO annotation file into a dict, renumbering annotation ids 1..N (in memory only) when any is not a
    positive, unique integer: COCOeval marks "unmatched" with id 0, so a ground truth with id 0 never counts as
    found, and duplicate ids make annotations shadow each other."""
    try:
        with open(ann_file, encoding='utf-8') as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f'{ann_file}: COCO annotation file not found') from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f'{ann_file}: not a readable COCO JSON file ({e})') from None
    missing = [k for k in ('images', 'annotations', 'categories') if not isinstance(data, dict) or k not in data]
    if missing:
        raise DatasetError(f'{ann_file}: expected a COCO instances file with "images", "annotations" and '
                           f'"categories"; {", ".join(missing)} missing')
    ids = [ann.get('id') for ann in data['annotations']]
    if any(not isinstance(i, int) or i <= 0 for i in ids) or len(set(ids)) != len(ids):
        for new_id, ann in enumerate(data['annotations'], 1):
            ann['id'] = new_id
    return data


def _backend_classes(backend: str):
    if backend == 'pycocotools':
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval
    if backend == 'faster_coco_eval':
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError:
            raise ConfigError("backend='faster_coco_eval' needs the faster-coco-eval package "
                              '(pip install faster-coco-eval)') from None
        return COCO, COCOeval_faster
    raise ConfigError(f'COCO evaluation backend: expected one of {BACKENDS}, got {backend!r}')


def _quiet(*args, **kwargs) -> None:
    """Print function for faster-coco-eval: the summary is logged by us."""


def _coco(coco_cls, dataset: dict):
    coco = coco_cls()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def coco_evaluate(gt: dict, results: Sequence[dict], iou_type: str = 'bbox', backend: str = 'pycocotools',
                  img_ids: Optional[Sequence[int]] = None, cat_ids: Optional[Sequence[int]] = None,
                  iou_thrs: Optional[Sequence[float]] = None):
    """Run COCOeval (evaluate, accumulate, summarize) of ``results`` against the ground-truth dict ``gt``.

    ``results`` are COCO result entries (as from :func:`coco_results`); they are copied, keeping ``bbox`` for
    ``iou_type='bbox'`` and ``segmentation`` for ``'segm'`` (so a mask's area is its own, not its box's, as in mmdet).
    ``img_ids``/``cat_ids`` restrict the evaluation (default: all of ``gt``). Returns the backend's evaluator:
    ``.stats[:12]`` are COCO's summary numbers, ``.eval['precision']`` is (T, R, K, A, M).
    The library's own printing is suppressed; pycocotools may write the segmentation RLEs into ``gt``.
    """
    if iou_type not in IOU_TYPES:
        raise ConfigError(f'COCO evaluation: iou_type must be one of {IOU_TYPES}, got {iou_type!r}')
    coco_cls, eval_cls = _backend_classes(backend)
    drop = 'segmentation' if iou_type == 'bbox' else 'bbox'
    dets = [{k: v for k, v in r.items() if k != drop} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = _coco(coco_cls, gt)
        if dets:
            coco_dt = coco_gt.loadRes(dets)
        else:  # loadRes of pycocotools cannot take an empty list
            coco_dt = _coco(coco_cls, dict(images=gt['images'], categories=gt['categories'], annotations=[]))
        if backend == 'faster_coco_eval':
            evaluator = eval_cls(coco_gt, coco_dt, iou_type, print_function=_quiet)
        else:
            evaluator = eval_cls(coco_gt, coco_dt, iou_type)
        if img_ids is not None:
            evaluator.params.imgIds = sorted(set(int(i) for i in img_ids))
        if cat_ids is not None:
            evaluator.params.catIds = sorted(set(int(c) for c in cat_ids))
        if iou_thrs is not None:
            evaluator.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _classwise_table(evaluator, gt: dict, iou_type: str) -> str:
    """Per-category AP (mmdet's classwise rows): mAP, mAP_50, mAP_75 and the area APs at 100 detections."""
    precision = evaluator.eval['precision']  # (iou, recall, category, area, maxDets)
    thrs = np.asarray(evaluator.params.iouThrs)
    names = {c['id']: str(c.get('name', c['id'])) for c in gt['categories']}

    def ap(p):
        p = p[p > -1]
        return f'{float(np.mean(p)):.3f}' if p.size else 'nan'

    def at(iou, k):
        t = np.flatnonzero(np.isclose(thrs, iou))
        return ap(precision[t, :, k, 0, -1]) if len(t) else 'nan'

    rows = [(names.get(cat_id, str(cat_id)), ap(precision[:, :, k, 0, -1]), at(0.5, k), at(0.75, k),
             *(ap(precision[:, :, k, a, -1]) for a in (1, 2, 3)))
            for k, cat_id in enumerate(evaluator.params.catIds)]
    header = ('category', *METRIC_ITEMS)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'

    def fmt(r):
        return '| ' + ' | '.join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                                 for i, (v, w) in enumerate(zip(r, widths))) + ' |'

    return '\n'.join([f'per-category {iou_type} AP', line, fmt(header), line, *map(fmt, rows), line])


@METRICS.register_module()
class CocoMetric(BaseMetric):
    """COCO box (``'bbox'``) and mask (``'segm'``) AP, reported as ``coco/bbox_mAP``, ``coco/bbox_mAP_50``, ...
    ``coco/segm_mAP_l`` (mmdet's names; full-precision floats).

    Args:
        ann_file: COCO annotation file; ``None`` takes ``dataset_meta['ann_file']`` (set by ``CocoDataset``).
        metric: ``'bbox'``, ``'segm'`` or a list of both.
        backend: ``'pycocotools'`` or ``'faster_coco_eval'`` (same numbers, faster on large sets).
        classwise: also log a table of per-category APs.
        iou_thrs: IoU thresholds (default COCO's 0.50:0.05:0.95). maxDets stay COCO's 1, 10, 100.

    Labels map to category ids through ``dataset_meta['cat_ids']``, or else by looking up
    ``dataset_meta['classes']`` by name in the annotation file. Only the images that were predicted on and the
    categories of ``cat_ids`` are evaluated (as in mmdet). Annotation ids that are not positive and unique are
    renumbered in memory (see :func:`load_coco_gt`); the file is never changed.
    """

    default_prefix = 'coco'

    def __init__(self, ann_file: Optional[str] = None, metric: Union[str, Sequence[str]] = 'bbox',
                 backend: str = 'pycocotools', classwise: bool = False, iou_thrs: Optional[Sequence[float]] = None,
                 collect_device: str = 'cpu', prefix: Optional[str] = 'coco'):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = (metric,) if isinstance(metric, str) else tuple(metric)
        if not self.metrics or any(m not in IOU_TYPES for m in self.metrics):
            raise ConfigError(f'CocoMetric.metric: expected {IOU_TYPES[0]!r}, {IOU_TYPES[1]!r} or a list of them, '
                              f'got {metric!r}')
        _backend_classes(backend)  # unknown or missing backend fails at build time
        self.backend = backend
        self.classwise = classwise
        if iou_thrs is not None:
            iou_thrs = np.atleast_1d(np.asarray(iou_thrs, dtype=np.float64))
            if not len(iou_thrs) or np.any((iou_thrs <= 0) | (iou_thrs > 1)):
                raise ConfigError(f'CocoMetric.iou_thrs: expected IoU thresholds in (0, 1], got {iou_thrs.tolist()}')
        self.iou_thrs = iou_thrs
        self.ann_file = ann_file
        self._gt = None
        self._gt_file = None

    def _ann_file(self) -> str:
        ann_file = self.ann_file or (self.dataset_meta or {}).get('ann_file')
        if not ann_file:
            raise ConfigError("CocoMetric: no ann_file given and dataset_meta has no 'ann_file' "
                              '(set CocoMetric(ann_file=...) or evaluate a CocoDataset)')
        return os.fspath(ann_file)

    def _ground_truth(self) -> dict:
        """The ground-truth dict, loaded once per annotation file."""
        ann_file = self._ann_file()
        if self._gt is None or self._gt_file != ann_file:
            self._gt, self._gt_file = load_coco_gt(ann_file), ann_file
        return self._gt

    def _cat_ids(self) -> list:
        meta = self.dataset_meta or {}
        if meta.get('cat_ids') is not None:
            return [int(c) for c in meta['cat_ids']]
        if meta.get('classes') is None:
            raise ConfigError("CocoMetric: dataset_meta has neither 'cat_ids' nor 'classes', so labels cannot be "
                              'mapped to COCO category ids')
        by_name = {}
        for cat in self._ground_truth()['categories']:
            by_name.setdefault(cat['name'], cat['id'])
        missing = [name for name in meta['classes'] if name not in by_name]
        if missing:
            raise DatasetError(f'{self._ann_file()}: class {missing[0]!r} of dataset_meta["classes"] is not a '
                               'category name of this file')
        return [by_name[name] for name in meta['classes']]

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        cat_ids = self._cat_ids()
        with_masks = 'segm' in self.metrics
        for pred in data_samples:
            if with_masks and 'pred_masks' not in pred:
                raise ConfigError(f"CocoMetric: metric 'segm' needs 'pred_masks' in the predictions (a model with a "
                                  f"mask head); image {pred.get('img_id')} has none")
            self.results.append(dict(img_id=int(pred['img_id']), dets=coco_results(pred, cat_ids, with_masks)))

    def compute_metrics(self, results: list) -> dict:
        logger = MMLogger.get_current_instance()
        gt = self._ground_truth()
        ann_file = self._ann_file()
        gt_sizes = {img['id']: (img.get('height'), img.get('width')) for img in gt['images']}
        img_ids = [r['img_id'] for r in results]
        unknown = sorted(set(img_ids) - set(gt_sizes))
        if unknown:
            raise DatasetError(f'{ann_file}: there are predictions for image id {unknown[0]}, which is not an image '
                               f'of this annotation file ({len(unknown)} unknown image ids in all)')
        dets = [d for r in results for d in r['dets']]
        if 'segm' in self.metrics:
            for d in dets:
                size = tuple(d['segmentation']['size'])
                if size != gt_sizes[d['image_id']]:
                    raise DatasetError(f'{ann_file}: a predicted mask of image id {d["image_id"]} is {size} (h, w), '
                                       f'but the image is {gt_sizes[d["image_id"]]}; masks must be at original size')
        cat_ids = self._cat_ids()
        metrics = {}
        for iou_type in self.metrics:
            if not dets:
                warnings.warn(f'CocoMetric: no {iou_type} predictions in {len(img_ids)} images; every COCO number is '
                              '0 (or -1 where the ground truth has no instance)')
            evaluator = coco_evaluate(gt, dets, iou_type, self.backend, img_ids, cat_ids, self.iou_thrs)
            stats = [float(s) for s in evaluator.stats[:12]]
            logger.info(f'COCO {iou_type} evaluation ({self.backend}, {len(img_ids)} images):\n'
                        + coco_summary_table(stats, iou_type, self.iou_thrs))
            if self.classwise:
                logger.info('\n' + _classwise_table(evaluator, gt, iou_type))
            metrics.update({f'{iou_type}_{item}': stats[i] for i, item in enumerate(METRIC_ITEMS)})
        return metrics
