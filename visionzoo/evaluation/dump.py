"""Write test predictions: a JSON file (detections in COCO results format), or label PNGs for segmentation."""
import json
import os
import warnings
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from mmengine.evaluator import BaseMetric

from ..registry import METRICS
from ..utils.errors import ConfigError
from .coco import coco_results

__all__ = ['DumpPredictions', 'DumpSegMaps', 'check_out_file', 'check_out_dir']


def check_out_file(out_file: str) -> None:
    """A predictions file must be a new ``.json`` file: nothing already written is replaced."""
    if not out_file.endswith('.json'):
        raise ConfigError(f'--out: expected a .json file name, got {out_file!r}')
    if os.path.exists(out_file):
        raise ConfigError(f'--out: {out_file} already exists; remove it or choose another file')


def check_out_dir(out_dir: str) -> None:
    """Label maps go to a new or empty folder: nothing already written is replaced."""
    if out_dir.endswith('.json'):
        raise ConfigError(f'--out: segmentation predictions are written as label PNGs into a folder; got the file '
                          f'name {out_dir!r}')
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise ConfigError(f'--out: {out_dir} exists and is not an empty folder; choose a new or empty folder')


def _to_json(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, dict):
        return {k: _to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    if hasattr(obj, 'item') and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


@METRICS.register_module()
class DumpPredictions(BaseMetric):
    """Collects every prediction of a test run and writes them as a JSON list to ``out_file``.

    Detection predictions (dicts with ``pred_bboxes``) are written in COCO results format, one flat entry per
    detection (``image_id, category_id, bbox`` as xywh, ``score`` and, for masks, an RLE ``segmentation``), so
    ``COCO.loadRes(out_file)`` reads them; labels map to ids through ``dataset_meta['cat_ids']``. An entry holding
    both box and mask is read by loadRes with its box area, which moves masks between the small/medium/large
    ranges of a mask evaluation (CocoMetric uses the mask area). Other predictions are written as they are.
    The file must not exist yet: nothing already written is replaced. It reports no metric.
    """

    def __init__(self, out_file: str, collect_device: str = 'cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        check_out_file(out_file)
        self.out_file = out_file

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        # one record per sample: mmengine's result collection cuts the list to the dataset size
        for sample in data_samples:
            if 'pred_bboxes' in sample:
                self.results.append(('coco', coco_results(sample, self._cat_ids())))
            else:
                self.results.append(('sample', _to_json(dict(sample))))

    def _cat_ids(self) -> list:
        cat_ids = (self.dataset_meta or {}).get('cat_ids')
        if cat_ids is None:
            raise ConfigError("DumpPredictions: detection predictions need dataset_meta['cat_ids'] (the COCO "
                              'category id of each label, set by CocoDataset) to be written in COCO format')
        return list(cat_ids)

    def compute_metrics(self, results: list) -> dict:
        os.makedirs(os.path.dirname(os.path.abspath(self.out_file)), exist_ok=True)
        records = []
        for kind, value in results:
            if kind == 'coco':
                records.extend(value)
            else:
                records.append(value)
        with open(self.out_file, 'x', encoding='utf-8') as f:
            json.dump(records, f)
        return {}


@METRICS.register_module()
class DumpSegMaps(BaseMetric):
    """Writes the predicted label map of every test image to ``out_dir/<image name>.png``, as mmseg's
    ``format_only`` does: class indices as pixel values (8-bit PNG, 16-bit when there are more than 255 classes),
    plus 1 where the dataset uses ``reduce_zero_label`` (so the values follow the dataset's own label files, e.g.
    ADE20K's 1..150). Maps are written as they come: nothing is kept in memory. ``out_dir`` must be new or empty;
    a repeated image name gets a numeric suffix (warned). It reports no metric.
    """

    def __init__(self, out_dir: str, collect_device: str = 'cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        check_out_dir(out_dir)
        self.out_dir = out_dir
        self._written = set()

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        for sample in data_samples:
            if 'pred_sem_seg' not in sample:
                raise ConfigError(f'DumpSegMaps: expected segmentation predictions (pred_sem_seg), got keys '
                                  f'{sorted(sample)}')
            label = sample['pred_sem_seg']
            label = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
            label = label.reshape(label.shape[-2:]).astype(np.int64)
            if sample.get('reduce_zero_label', False):
                label = label + 1
            dtype = np.uint8 if label.max(initial=0) < 256 else np.uint16
            stem = os.path.splitext(os.path.basename(str(sample.get('img_path') or f'{len(self._written)}')))[0]
            name, n = f'{stem}.png', 1
            while name in self._written:
                name, n = f'{stem}_{n}.png', n + 1
            if n > 1:
                warnings.warn(f'DumpSegMaps: image name {stem} repeats; written as {name}')
            self._written.add(name)
            Image.fromarray(label.astype(dtype)).save(os.path.join(self.out_dir, name))
            self.results.append(name)

    def compute_metrics(self, results: list) -> dict:
        return {}
