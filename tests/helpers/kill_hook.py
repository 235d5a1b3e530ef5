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


@HOOKS.register_module()
class KillMidSaveHook(Hook):
    """SIGKILL in the middle of writing the checkpoint of the given (1-based) epoch: half of its bytes are on disk.

    Every local checkpoint write of mmengine goes through ``LocalBackend.put``; the hook replaces it, just before
    that epoch's save, by one that writes half the bytes, flushes them and kills the process.
    """

    def __init__(self, epoch: int):
        self.epoch = epoch

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        if checkpoint['meta']['epoch'] != self.epoch:
            return
        from mmengine.fileio import LocalBackend

        def put_half_then_die(backend, obj: bytes, filepath) -> None:
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        LocalBackend.put = put_half_then_die
