"""The parts of timm's model contract that every visionzoo family implements the same way."""
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.layers import trunc_normal_

__all__ = ['ClassifierMixin', 'init_linear_trunc_normal']


def init_linear_trunc_normal(module: nn.Module) -> None:
    """The official initialisation of the transformer families (for ``model.apply``): truncated-normal (std 0.02)
    Linear weights and zero biases. Norms keep PyTorch's initialisation (weight 1, bias 0)."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ClassifierMixin:
    """Classifier handling and gradient checkpointing for an ``nn.Module`` with ``head``, ``num_features``,
    ``global_pool`` and ``grad_checkpointing`` attributes.

    ``forward_head`` here pools an NCHW map and applies ``head_drop`` (VAN, BiFormer); families whose features
    have another layout override it.

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

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C, H, W) map -> logits: average pooling (``global_pool='avg'``), dropout, classifier."""
        if self.global_pool == 'avg':
            x = x.mean((2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _checkpointed(self, fn: Callable, *args):
        """``fn(*args)``, through activation checkpointing when it is on and gradients are being recorded."""
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)
