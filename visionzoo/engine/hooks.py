"""Hooks that make evaluation visible: a progress bar, a metric table, drawn predictions."""
import os
from typing import Dict, Optional, Sequence

from mmengine.hooks import Hook
from tqdm import tqdm

from ..registry import HOOKS

__all__ = ['EvalProgressHook', 'MetricTableHook', 'PredictionDrawHook', 'format_metric_table']


@HOOKS.register_module()
class EvalProgressHook(Hook):
    """A tqdm progress bar over validation and test batches (on the main process only)."""

    priority = 'VERY_LOW'

    def __init__(self, disable: Optional[bool] = None):
        self.disable = disable
        self._bar = None

    def _open(self, runner, loader, desc):
        if runner.rank == 0:
            self._bar = tqdm(total=len(loader), desc=desc, leave=False, dynamic_ncols=True, disable=self.disable)

    def _step(self):
        if self._bar is not None:
            self._bar.update(1)

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def before_val_epoch(self, runner) -> None:
        self._open(runner, runner.val_loop.dataloader, 'val')

    def before_test_epoch(self, runner) -> None:
        self._open(runner, runner.test_loop.dataloader, 'test')

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._step()

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._step()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._close()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close()


def format_metric_table(metrics: Dict[str, float], title: str = '') -> str:
    """Two-column text table of metric names and values."""
    rows = [(k, f'{v:.4f}' if isinstance(v, float) else str(v)) for k, v in metrics.items()]
    w0 = max([len('metric')] + [len(k) for k, _ in rows])
    w1 = max([len('value')] + [len(v) for _, v in rows])
    line = f'+-{"-" * w0}-+-{"-" * w1}-+'
    out = [title] if title else []
    out += [line, f'| {"metric".ljust(w0)} | {"value".rjust(w1)} |', line]
    out += [f'| {k.ljust(w0)} | {v.rjust(w1)} |' for k, v in rows]
    out.append(line)
    return '\n'.join(out)


@HOOKS.register_module()
class MetricTableHook(Hook):
    """Logs the metrics of every validation and (with ``test=True``) test run as a table.

    ``tools/test.py`` prints the test table itself and sets ``test=False``, so the table appears once.
    """

    priority = 'LOW'

    def __init__(self, test: bool = True):
        self.test = test

    def _log(self, runner, metrics, title):
        if metrics and runner.rank == 0:
            runner.logger.info('\n' + format_metric_table(metrics, title))

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._log(runner, metrics, f'val metrics (epoch {runner.epoch}, iter {runner.iter})')

    def after_test_epoch(self, runner, metrics=None) -> None:
        if self.test:
            self._log(runner, metrics, 'test metrics')


@HOOKS.register_module()
class PredictionDrawHook(Hook):
    """Draws test predictions onto their images and writes them as PNG files into ``show_dir``.

    Detections scoring below ``score_thr`` are not drawn; segmentation maps are coloured with the dataset's
    ``palette`` and get a legend. Existing files are never replaced: the tools refuse a
    non-empty ``show_dir``, and a name clash inside one run gets a numeric suffix.
    """

    def __init__(self, show_dir: str, max_images: Optional[int] = None, classes: Optional[Sequence[str]] = None,
                 score_thr: float = 0.3):
        self.show_dir = show_dir
        self.score_thr = score_thr
        self.max_images = max_images
        self.classes = classes
        self.palette = None
        self._count = 0

    def before_test_epoch(self, runner) -> None:
        os.makedirs(self.show_dir, exist_ok=True)
        meta = getattr(runner.test_dataloader.dataset, 'metainfo', None) or {}
        if self.classes is None:
            self.classes = meta.get('classes')
        self.palette = meta.get('palette')

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        import cv2  # only when drawing: importing visionzoo does not load OpenCV

        from ..visualization import draw_prediction
        for pred in outputs or []:
            if self.max_images is not None and self._count >= self.max_images:
                return
            path = pred.get('img_path')
            img = cv2.imread(path) if path else None
            if img is None:
                continue
            # the parent folder keeps names of different classes apart (ImageFolder numbers images per class)
            stem = f'{os.path.basename(os.path.dirname(path))}_{os.path.splitext(os.path.basename(path))[0]}'
            out = os.path.join(self.show_dir, f'{stem}.png')
            n = 1
            while os.path.exists(out):
                out = os.path.join(self.show_dir, f'{stem}_{n}.png')
                n += 1
            cv2.imwrite(out, draw_prediction(img, pred, self.classes, score_thr=self.score_thr, palette=self.palette))
            self._count += 1
