"""Runner glue: safe checkpoint loading, CPU mixed precision, evaluation hooks."""
from .checkpoint import load_state_dict_file, runner_safe_globals, safe_load
from .hooks import EvalProgressHook, MetricTableHook, PredictionDrawHook
from .loops import EpochBasedTrainLoop
from .optim import CPUAmpOptimWrapper, amp_optim_wrapper_type

__all__ = [
    'safe_load', 'runner_safe_globals', 'load_state_dict_file', 'CPUAmpOptimWrapper', 'amp_optim_wrapper_type',
    'EvalProgressHook', 'MetricTableHook', 'PredictionDrawHook', 'EpochBasedTrainLoop',
]
