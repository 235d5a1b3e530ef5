"""Training loops: mmengine's epoch loop, made to resume from a checkpoint written in the middle of an epoch."""
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop as _MMEpochBasedTrainLoop

from ..registry import LOOPS

__all__ = ['EpochBasedTrainLoop']


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
