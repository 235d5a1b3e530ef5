"""The parts of timm's model contract that every visionzoo family implements the same way."""
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint

__all__ = ['ClassifierMixin']


class ClassifierMixin:
    """Classifier handling and gradient checkpointing for an ``nn.Module`` with ``head``, ``num_features``,
    ``global_pool`` and ``grad_checkpointing`` attributes.

    ``GLOBAL_POOLS`` lists the pooling modes the model supports; a family with conditions of its own (Vim: ``'token'``
    only with a class token) overrides :meth:`_checked_pool`.
    """

    GLOBAL_POOLS: Sequence[str] = ('avg', '')

    def _checked_pool(self, global_pool: str) -> str:
        if global_pool not in self.GLOBAL_POOLS:
            allowed = ', '.join(repr(p) for p in self.GLOBAL_POOLS)
            raise ValueError(f'global_pool must be one of {allowed}, got {global_pool!r}')
        return global_pool

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = self._checked_pool(global_pool)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _checkpointed(self, fn: Callable, *args):
        """``fn(*args)``, through activation checkpointing when it is on and gradients are being recorded."""
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)
