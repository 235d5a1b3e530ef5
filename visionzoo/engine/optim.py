"""Mixed precision on CPU.

mmengine's ``AmpOptimWrapper`` asserts a CUDA/NPU/MLU/MUSA device. ``CPUAmpOptimWrapper`` runs the forward
pass under ``torch.autocast('cpu', dtype=torch.bfloat16)``; bf16 keeps fp32's exponent range, so no loss
scaling is needed and the optimizer step stays in fp32 on fp32 master weights.
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper

from ..registry import OPTIM_WRAPPERS
from ..utils.errors import ConfigError

__all__ = ['CPUAmpOptimWrapper', 'amp_optim_wrapper_type']

_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float16': torch.float16, 'fp16': torch.float16}


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """Optimizer wrapper that runs the model under CPU autocast (bf16 by default)."""

    def __init__(self, dtype: str = 'bfloat16', **kwargs):
        if dtype not in _DTYPES:
            raise ConfigError(f'optim_wrapper.dtype: expected one of {sorted(_DTYPES)}, got {dtype!r}')
        super().__init__(**kwargs)
        self.cast_dtype = _DTYPES[dtype]

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def amp_optim_wrapper_type(cuda_available: bool) -> dict:
    """The optim_wrapper fields that ``--amp`` sets for the device at hand."""
    if cuda_available:
        return dict(type='AmpOptimWrapper', loss_scale='dynamic')
    return dict(type='CPUAmpOptimWrapper', dtype='bfloat16')
