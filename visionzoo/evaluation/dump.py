"""Write test predictions to a JSON file."""
import json
import os
from typing import Sequence

import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS
from ..utils.errors import ConfigError

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

    The file must not exist yet: nothing already written is replaced. It reports no metric.
    """

    def __init__(self, out_file: str, collect_device: str = 'cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        check_out_file(out_file)
        self.out_file = out_file

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        self.results.extend(_to_json(dict(s)) for s in data_samples)

    def compute_metrics(self, results: list) -> dict:
        os.makedirs(os.path.dirname(os.path.abspath(self.out_file)), exist_ok=True)
        with open(self.out_file, 'x', encoding='utf-8') as f:
            json.dump(results, f)
        return {}
