"""Optimizer wrappers: a non-finite-loss guard for every model, and mixed precision on CPU.

Non-finite losses: mmengine's ``train_step`` (``BaseModel``'s, and ``MMDistributedDataParallel``'s under DDP) ends
with ``optim_wrapper.update_params(loss)``, so the guard lives there and covers every model type. It checks the
summed loss before the backward pass: ``nonfinite_loss='stop'`` (default) raises :class:`NonFiniteLossError` naming
the iteration and every loss term, so neither the weights nor any saved checkpoint become NaN; ``'skip'`` warns and
drops that batch (no backward pass, no optimizer step) and stops after ``max_consecutive_skips`` non-finite losses in a
row (default 10: a run that only produces NaN would otherwise "train" to the end). Under DDP the ranks first agree (one all-reduce of a flag),
so all of them stop or skip together instead of hanging in the gradient all-reduce. The loss terms for the message
come from the model's loss dict, caught by a forward hook held only inside :meth:`optim_context`.

The tools use the guarded wrappers for every config: :func:`visionzoo.engine.runner_utils.use_guarded_optim_wrapper`
turns mmengine's ``OptimWrapper``/``AmpOptimWrapper`` into ``GuardedOptimWrapper``/``GuardedAmpOptimWrapper``.

Mixed precision on CPU: mmengine's ``AmpOptimWrapper`` asserts a CUDA/NPU/MLU/MUSA device. ``CPUAmpOptimWrapper``
runs the forward pass under ``torch.autocast('cpu', dtype=torch.bfloat16)``; bf16 keeps fp32's exponent range, so no
loss scaling is needed and the optimizer step stays in fp32 on fp32 master weights.
"""
import warnings
from contextlib import contextmanager
from typing import Dict, Optional

import torch
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from ..registry import OPTIM_WRAPPERS
from ..utils.errors import ConfigError, NonFiniteLossError

__all__ = ['NonFiniteLossGuard', 'GuardedOptimWrapper', 'GuardedAmpOptimWrapper', 'CPUAmpOptimWrapper',
           'amp_optim_wrapper_type', 'NONFINITE_LOSS_MODES']

NONFINITE_LOSS_MODES = ('stop', 'skip')
_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float16': torch.float16, 'fp16': torch.float16}


def _term_values(losses: dict) -> Dict[str, float]:
    """Every entry of a model's loss dict as one number, reduced as mmengine's ``parse_losses`` does."""
    out = {}
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            out[name] = float(value.detach().float().mean())
        elif isinstance(value, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in value):
            out[name] = float(sum(v.detach().float().mean() for v in value))
    return out


class NonFiniteLossGuard:
    """Mixin for an mmengine ``OptimWrapper``: refuses NaN/inf losses before the backward pass (see module doc).

    Args:
        nonfinite_loss: ``'stop'`` raises :class:`NonFiniteLossError`; ``'skip'`` warns and skips the batch.
        max_consecutive_skips: with ``'skip'``, raise :class:`NonFiniteLossError` when this many batches in a row
            had a non-finite loss.
    """

    def __init__(self, *args, nonfinite_loss: str = 'stop', max_consecutive_skips: int = 10, **kwargs):
        if nonfinite_loss not in NONFINITE_LOSS_MODES:
            raise ConfigError(f"optim_wrapper.nonfinite_loss: expected 'stop' or 'skip', got {nonfinite_loss!r}")
        if isinstance(max_consecutive_skips, bool) or not isinstance(max_consecutive_skips, int) or \
                max_consecutive_skips < 1:
            raise ConfigError(f'optim_wrapper.max_consecutive_skips: expected a positive int, got '
                              f'{max_consecutive_skips!r}')
        super().__init__(*args, **kwargs)
        self.nonfinite_loss = nonfinite_loss
        self.max_consecutive_skips = max_consecutive_skips
        self._skipped_in_a_row = 0
        self._loss_terms: Optional[dict] = None

    def _catch_loss_dict(self, module, args, output) -> None:
        if isinstance(output, dict):
            self._loss_terms = output

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        self._loss_terms = None
        handle = model.register_forward_hook(self._catch_loss_dict)
        try:
            with super().optim_context(model):
                yield
        finally:
            handle.remove()

    def update_params(self, loss: torch.Tensor, step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        terms, self._loss_terms = self._loss_terms, None
        bad = torch.logical_not(torch.isfinite(loss.detach()).all()).to(torch.int32).reshape(1)
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            local_bad = bool(bad)
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        else:
            local_bad = None
        if not bool(bad):
            self._skipped_in_a_row = 0
            super().update_params(loss, step_kwargs=step_kwargs, zero_kwargs=zero_kwargs)
            return
        hub = MessageHub.get_current_instance()
        where = f'iteration {int(hub.get_info("iter", 0)) + 1} (epoch {int(hub.get_info("epoch", 0)) + 1})'
        values = _term_values(terms) if terms else {}
        if not values:
            values = {'loss': float(loss.detach().float().mean())}
        what = ', '.join(f'{k}={v:.4g}' for k, v in values.items())
        if local_bad is False:
            what = 'finite on this rank, non-finite on another rank'
        if self.nonfinite_loss == 'stop':
            raise NonFiniteLossError(
                f'non-finite loss at {where}: {what}; stopped before the optimizer step (the weights and saved '
                f"checkpoints are finite). Lower the learning rate, or set optim_wrapper.nonfinite_loss='skip'")
        self._skipped_in_a_row += 1
        if self._skipped_in_a_row >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                f'non-finite loss at {where}: {what}; {self._skipped_in_a_row} batches in a row had a non-finite loss '
                f'(optim_wrapper.max_consecutive_skips={self.max_consecutive_skips}), stopped. Lower the learning '
                f'rate or check the data')
        warnings.warn(f'non-finite loss at {where}: {what}; skipping this batch (no backward pass, no optimizer step)')
        # count the batch, so gradient-accumulation windows stay aligned with the iterations
        self._inner_count += 1
        if self.should_update():
            self.zero_grad(**(zero_kwargs or {}))


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(NonFiniteLossGuard, OptimWrapper):
    """mmengine's ``OptimWrapper`` with the non-finite-loss guard (``nonfinite_loss='stop' | 'skip'``)."""


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(NonFiniteLossGuard, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` (CUDA fp16 with loss scaling) with the non-finite-loss guard."""


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(NonFiniteLossGuard, OptimWrapper):
    """Optimizer wrapper that runs the model under CPU autocast (bf16 by default), with the non-finite-loss guard."""

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
