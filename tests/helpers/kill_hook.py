"""A hook that kills the training process hard (SIGKILL) right after an epoch's checkpoint is written."""
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
