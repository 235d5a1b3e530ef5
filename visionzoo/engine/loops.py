"""mmengine's loops, registered under their own names in the ``visionzoo`` scope:

- ``EpochBasedTrainLoop`` resumes from a checkpoint written in the middle of an epoch;
- ``ValLoop`` and ``TestLoop`` never score a sample twice: an unreadable image of a dataset that skips them
  (``skip_corrupt=True``, ``on_invalid='skip'``) is dropped from the batch and counted, not replaced by its neighbour.
"""
import logging

from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop as _MMEpochBasedTrainLoop
from mmengine.runner import TestLoop as _MMTestLoop
from mmengine.runner import ValLoop as _MMValLoop

from ..registry import LOOPS

__all__ = ['EpochBasedTrainLoop', 'ValLoop', 'TestLoop']

_DROPPED = '_unreadable_dropped'


@LOOPS.register_module()
class EpochBasedTrainLoop(_MMEpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` that continues a resumed epoch where its checkpoint left it.

    mmengine restores the iteration counter from an iteration checkpoint (``CheckpointHook(by_epoch=False)``) but
    then runs the resumed epoch from its first batch, so those batches are trained twice and the run ends with more
    iterations than configured. Here the batches before the checkpoint are drawn and dropped: the sampler's order
    depends only on the seed and the epoch, so the remaining batches are the ones the interrupted run would have
    trained. Registered under mmengine's name in the ``visionzoo`` scope, so every config gets it.
    """

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        done = self._iter - self._epoch * len(self.dataloader)
        if done > 0:
            print_log(f'resuming inside epoch {self._epoch + 1}: skipping its first {done} batches, trained before '
                      f'the checkpoint', logger='current')
        for idx, data_batch in enumerate(self.dataloader):
            if idx < done:
                continue
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


class _DropUnreadable:
    """``collate_fn`` wrapper: leaves out the ``None`` items of unreadable samples and records how many."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, items):
        kept = [item for item in items if item is not None]
        batch = self.collate_fn(kept) if kept else {}
        batch[_DROPPED] = len(items) - len(kept)
        return batch


class _ScoreEachSampleOnce:
    """Evaluation-loop mixin: see the module doc."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._dropped = 0
        dataset = self.dataloader.dataset
        if getattr(dataset, 'skips_unreadable', False) and hasattr(dataset, 'drop_unreadable'):
            dataset.drop_unreadable()
            self.dataloader.collate_fn = _DropUnreadable(self.dataloader.collate_fn)

    def run(self) -> dict:
        self._dropped = 0
        metrics = super().run()
        if self._dropped:
            n = len(self.dataloader.dataset)
            print_log(f'{self._dropped} unreadable image(s) skipped and not scored: the metrics cover '
                      f'{n - self._dropped} of {n} images', logger='current', level=logging.WARNING)
        return metrics

    def run_iter(self, idx, data_batch) -> None:
        if isinstance(data_batch, dict) and _DROPPED in data_batch:
            data_batch = dict(data_batch)
            self._dropped += data_batch.pop(_DROPPED)
            if not data_batch:
                return  # every sample of the batch was unreadable
        super().run_iter(idx, data_batch)


@LOOPS.register_module()
class ValLoop(_ScoreEachSampleOnce, _MMValLoop):
    """mmengine's ``ValLoop`` that drops unreadable samples instead of scoring a neighbour twice."""


@LOOPS.register_module()
class TestLoop(_ScoreEachSampleOnce, _MMTestLoop):
    """mmengine's ``TestLoop`` that drops unreadable samples instead of scoring a neighbour twice."""
