"""The parts of timm's model contract that every visionzoo family implements the same way: classifier setup and
reset, pooling checks, gradient checkpointing, ``output_fmt`` checks and ``prune_intermediate_layers``."""
from typing import Callable, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices

from ..utils.options import argument_error

__all__ = ['ClassifierMixin', 'init_linear_trunc_normal', 'check_output_fmt', 'checkpointed']


def init_linear_trunc_normal(module: nn.Module) -> None:
    """The official initialisation of the transformer families (for ``model.apply``): truncated-normal (std 0.02)
    Linear weights and zero biases. Norms keep PyTorch's initialisation (weight 1, bias 0)."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def check_output_fmt(owner: object, output_fmt: str, allowed: Sequence[str]) -> str:
    """``output_fmt`` if it is one of ``allowed``, else an ArgumentError naming the model's
    ``forward_intermediates``."""
    if output_fmt not in allowed:
        raise argument_error(f'{type(owner).__name__}.forward_intermediates', 'output_fmt', output_fmt,
                             f"output_fmt must be one of {', '.join(repr(f) for f in allowed)}")
    return output_fmt


def checkpointed(enabled: bool, fn: Callable, *args, context_fn: Optional[Callable] = None):
    """``fn(*args)``, through activation checkpointing when ``enabled`` and gradients are being recorded."""
    if enabled and torch.is_grad_enabled() and not torch.jit.is_scripting():
        kwargs = {} if context_fn is None else dict(context_fn=context_fn)
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return fn(*args)


class ClassifierMixin:
    """Classifier handling, gradient checkpointing and layer pruning for an ``nn.Module``.

    A model calls :meth:`_init_classifier` where it builds its head (it sets ``num_classes``, ``num_features``,
    ``head_hidden_size``, ``global_pool``, ``head_drop``, ``head`` and ``grad_checkpointing``).

    ``forward_head`` here pools an NCHW map and applies ``head_drop`` (VAN, BiFormer); families whose features
    have another layout override it.

    ``GLOBAL_POOLS`` lists the pooling modes the model supports; a family with conditions of its own (Vim: ``'token'``
    only with a class token) overrides :meth:`_checked_pool`.

    :meth:`prune_intermediate_layers` keeps the first ``n`` feature levels through the family's
    :meth:`_prune_levels` (``_num_levels()`` of them exist); ``FINAL_NORM`` names the norm that ``prune_norm``
    replaces (None: the model has no final norm outside its feature levels).
    """

    GLOBAL_POOLS: Sequence[str] = ('avg', '')
    FINAL_NORM: Optional[str] = 'norm'

    def _init_classifier(self, num_features: int, num_classes: int, global_pool: str, drop_rate: float = 0.) -> None:
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = num_features
        self.global_pool = self._checked_pool(global_pool)
        self.grad_checkpointing = False
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _checked_pool(self, global_pool: str) -> str:
        if global_pool not in self.GLOBAL_POOLS:
            allowed = ', '.join(repr(p) for p in self.GLOBAL_POOLS)
            raise argument_error(type(self).__name__, 'global_pool', global_pool,
                                 f'global_pool must be one of {allowed}, got {global_pool!r}')
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
        return checkpointed(self.grad_checkpointing, fn, *args)

    def _num_levels(self) -> int:
        raise NotImplementedError

    def _prune_levels(self, keep: int) -> None:
        raise NotImplementedError

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the feature levels (blocks or stages) after the last wanted one, the final norm when ``prune_norm``
        and the classifier when ``prune_head``; returns the kept indices, as timm's models do."""
        take_indices, max_index = feature_take_indices(self._num_levels(), indices)
        self._prune_levels(max_index + 1)
        if prune_norm and self.FINAL_NORM is not None:
            setattr(self, self.FINAL_NORM, nn.Identity())
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices
