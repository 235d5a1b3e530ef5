"""Runner glue: safe checkpoint loading, the non-finite-loss guard, CPU mixed precision, evaluation hooks.

Importing it changes nothing outside visionzoo's registries: the weights-only checkpoint loader is installed into
mmengine by :func:`install_checkpoint_loader`, which the tools' setup calls.
"""
from .checkpoint import install_checkpoint_loader, load_state_dict_file, runner_safe_globals, safe_load
from .hooks import EvalProgressHook, MetricTableHook, PredictionDrawHook
from .loops import EpochBasedTrainLoop, TestLoop, ValLoop
from .optim import (CPUAmpOptimWrapper, GuardedAmpOptimWrapper, GuardedOptimWrapper, NonFiniteLossGuard,
                    amp_optim_wrapper_type)
from .resume import CheckpointHook, CheckpointKeysHook, resolve_last_checkpoint

__all__ = [
    'safe_load', 'runner_safe_globals', 'load_state_dict_file', 'install_checkpoint_loader', 'CPUAmpOptimWrapper',
    'GuardedOptimWrapper', 'GuardedAmpOptimWrapper', 'NonFiniteLossGuard', 'amp_optim_wrapper_type',
    'EvalProgressHook', 'MetricTableHook', 'PredictionDrawHook', 'EpochBasedTrainLoop', 'ValLoop', 'TestLoop', 'CheckpointHook',
    'CheckpointKeysHook', 'resolve_last_checkpoint',
]
