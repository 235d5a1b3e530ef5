"""Write test predictions to a JSON file (detections in COCO results format)."""
import json
import os
from typing import Sequence

import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS
from ..utils.errors import ConfigError
from .coco import coco_results

__all__ = ['DumpPredictions', 'check_out_file']


def check_out_file(out_file: str) -> None:
    """A predictions file must be a new ``.json`` file: nothing already written is replaced."""
    if not out_file.endswith('.json'):
        raise ConfigError(f'--out: expected a .json file name, got {out_file!r}')
    if os.path.exists(out_file):
        raise ConfigError(f'--out: {out_file} already exists; remove it or choose another file')


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
