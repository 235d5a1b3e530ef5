"""The one norm / activation factory of the necks, heads and backbone wrappers.

A norm is given as None, a type name (``'BN'``, ``'SyncBN'``, ``'GN'``, ``'LN'``) or an mmdet-style dict
(``dict(type='GN', num_groups=16, eps=1e-5, requires_grad=True)``); an activation as None, a name (``'ReLU'``,
``'GELU'``, ...) or ``dict(type='LeakyReLU', negative_slope=0.1, inplace=True)``. Every norm works on NCHW maps:

- ``'BN'`` / ``'SyncBN'``: ``nn.BatchNorm2d`` / ``nn.SyncBatchNorm``;
- ``'GN'``: ``nn.GroupNorm``, 32 groups unless ``num_groups`` says otherwise (mmdet's usual choice);
- ``'LN'``: timm's ``LayerNorm2d``, over the channels of each pixel, eps 1e-6 unless ``eps`` says otherwise (mmcv's
  ``LN`` would normalise over the last axis, the width).

Other dict keys go to the layer's constructor; ``requires_grad=False`` freezes a norm's affine parameters. A spec
the factory cannot use is an :class:`~visionzoo.utils.errors.ArgumentError` naming the module and argument that
carried it: ``FPN(norm='BatchNorm'): expected None or one of ['BN', 'GN', 'LN', 'SyncBN'] ...``.
"""
import functools
import warnings
from collections.abc import Mapping
from typing import Collection, Optional, Tuple, Union

import torch.nn as nn
from timm.layers import LayerNorm2d

from ..utils.errors import ArgumentError

__all__ = ['NORM_TYPES', 'ACT_TYPES', 'LAYER_TYPES', 'NormCfg', 'ActCfg', 'build_norm', 'build_act', 'norm_abbr',
           'single_value_batchnorm_uses_running_stats']

NormCfg = Optional[Union[str, dict]]
ActCfg = Optional[Union[str, dict]]

NORM_TYPES = {'BN': nn.BatchNorm2d, 'SyncBN': nn.SyncBatchNorm, 'GN': nn.GroupNorm, 'LN': LayerNorm2d}
ACT_TYPES = {'ReLU': nn.ReLU, 'LeakyReLU': nn.LeakyReLU, 'SiLU': nn.SiLU, 'GELU': nn.GELU, 'Hardswish': nn.Hardswish}
# the names configs may give as type=... for a norm or an activation: not registry types; the tools' type check
# (visionzoo.engine.config) accepts them
LAYER_TYPES = frozenset(NORM_TYPES) | frozenset(ACT_TYPES)


def _type_and_options(cfg, kinds: Collection[str], owner: str, arg: str) -> Tuple[str, dict]:
    if isinstance(cfg, str):
        kind, options = cfg, {}
    elif isinstance(cfg, Mapping):
        options = dict(cfg)
        kind = options.pop('type', None)
    else:
        raise ArgumentError(f'{owner}({arg}={cfg!r}): expected None, a type name or dict(type=..., ...)')
    if kind not in kinds:
        raise ArgumentError(f'{owner}({arg}={cfg!r}): expected None or one of {sorted(kinds)} (a name or '
                            f'dict(type=...))')
    return kind, options


def build_norm(cfg: NormCfg, num_channels: int, *, owner: str = 'build_norm', arg: str = 'norm',
               allowed: Optional[Collection[str]] = None) -> Optional[nn.Module]:
    """The norm layer ``cfg`` describes, for ``num_channels`` channels of an NCHW map; None for None.

    ``owner`` and ``arg`` name the module and argument ``cfg`` came from, for the error message; ``allowed`` limits
    the accepted types (default: all of :data:`NORM_TYPES`).
    """
    if cfg is None:
        return None
    kinds = NORM_TYPES if allowed is None else [k for k in NORM_TYPES if k in allowed]
    kind, options = _type_and_options(cfg, kinds, owner, arg)
    requires_grad = options.pop('requires_grad', True)
    if not isinstance(requires_grad, bool):
        raise ArgumentError(f'{owner}({arg}={cfg!r}): requires_grad must be True or False, got {requires_grad!r}')
    eps = options.get('eps', 1.0)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ArgumentError(f'{owner}({arg}={cfg!r}): eps must be a positive number, got {eps!r}')
    cls = NORM_TYPES[kind]
    try:
        if kind == 'GN':
            groups = options.pop('num_groups', 32)
            if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or num_channels % groups:
                raise ArgumentError(f'{owner}({arg}={cfg!r}): GroupNorm num_groups={groups!r} must divide the '
                                    f'{num_channels} channels')
            layer = cls(groups, num_channels, **options)
        else:
            layer = cls(num_channels, **options)
    except TypeError as e:  # an option the layer does not take
        raise ArgumentError(f'{owner}({arg}={cfg!r}): bad options for {kind}: {e}') from e
    for p in layer.parameters():
        p.requires_grad_(requires_grad)
    return layer


def build_act(cfg: ActCfg, *, owner: str = 'build_act', arg: str = 'act',
              allowed: Optional[Collection[str]] = None) -> Optional[nn.Module]:
    """The activation ``cfg`` describes (``'ReLU'``, ``dict(type='LeakyReLU', negative_slope=0.1)``); None for None."""
    if cfg is None:
        return None
    kinds = ACT_TYPES if allowed is None else [k for k in ACT_TYPES if k in allowed]
    kind, options = _type_and_options(cfg, kinds, owner, arg)
    try:
        return ACT_TYPES[kind](**options)
    except TypeError as e:
        raise ArgumentError(f'{owner}({arg}={cfg!r}): bad options for {kind}: {e}') from e


def norm_abbr(layer: nn.Module) -> str:
    """The attribute name mmcv's ``ConvModule`` gives a norm layer (``bn``, ``gn``, ``ln``), so that checkpoints of
    mmdet-built modules load by key."""
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return 'bn'
    if isinstance(layer, nn.GroupNorm):
        return 'gn'
    if isinstance(layer, (nn.LayerNorm, LayerNorm2d)):
        return 'ln'
    raise TypeError(f'norm_abbr: expected a BatchNorm, GroupNorm or LayerNorm, got {type(layer).__name__}')


_SINGLE_VALUE_FLAG = '_visionzoo_single_value_step'


def _single_value_pre(name: str, state: dict, module: nn.Module, args) -> None:
    x = args[0] if args else None
    if module.training and module.running_mean is not None and x is not None and x.dim() >= 2 and \
            x.numel() == x.shape[1]:
        if not state['warned']:
            warnings.warn(f'{name} (and maybe deeper BatchNorm layers): one value per channel in training (input '
                          f'{tuple(x.shape)}: a batch of one image with a 1x1 feature map); running statistics are '
                          f'used for such layers and steps, as in evaluation', stacklevel=2)
            state['warned'] = True
        setattr(module, _SINGLE_VALUE_FLAG, True)
        module.training = False


def _single_value_post(module: nn.Module, args, output) -> None:
    if getattr(module, _SINGLE_VALUE_FLAG, False):
        setattr(module, _SINGLE_VALUE_FLAG, False)
        module.training = True


def single_value_batchnorm_uses_running_stats(model: nn.Module) -> None:
    """Let every BatchNorm of ``model`` run a training step on one value per channel.

    ``nn.BatchNorm*`` refuses a training batch with one value per channel ("Expected more than 1 value per channel
    when training"): a batch of one image whose deepest feature map is 1x1. Batch statistics of one value are
    undefined (zero variance); such a call uses the layer's running statistics instead, as in evaluation, and does
    not update them (one warning per model names the first such layer). Every other call is unchanged. Idempotent.
    """
    state = dict(warned=False)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not getattr(module, '_visionzoo_guarded', False):
            module.register_forward_pre_hook(functools.partial(_single_value_pre, name, state))
            module.register_forward_hook(_single_value_post)
            module._visionzoo_guarded = True
