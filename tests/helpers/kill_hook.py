"""Hooks that kill the training process hard (SIGKILL) right after a checkpoint is written."""
import os
import signal

from mmengine.hooks import Hook

from visionzoo.registry import HOOKS


@HOOKS.register_module()
class KillAfterEpochHook(Hook):
    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) has saved the epoch

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class KillAfterIterHook(Hook):
    """SIGKILL right after the given (1-based) training iteration and its checkpoint."""

    priority = 'LOWEST'

    def __init__(self, iter: int):
        self.iter = iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iter:
            os.kill(os.getpid(), signal.SIGKILL)
