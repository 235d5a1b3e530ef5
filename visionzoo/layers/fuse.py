"""Inference-time re-parameterisation: fold BatchNorm (and model-specific norms) into neighbouring layers.

:func:`fuse` works on any model. It folds, in eval mode:

* ``Conv → BatchNorm`` and ``Linear → BatchNorm1d`` pairs that follow each other in an ``nn.Sequential``;
* ``BatchNorm → Linear`` and ``BatchNorm → Conv`` (no padding) pairs in an ``nn.Sequential``;
* whatever a sub-module folds itself: a module with a ``fuse()`` method (timm's ``ConvNorm``/``NormLinear``,
  visionzoo's blocks) is replaced by what the method returns; a module with ``reparameterize()`` (timm's
  re-parameterisable blocks) is re-parameterised in place;
* modules of classes we do not own through fusers registered with :func:`register_fuser`.

The building blocks (:func:`fold_bn_into`, :func:`fold_affine_after`, :func:`fold_affine_before`,
:func:`bn_affine`) are public so that model files can fold their own structures (VAN's blocks, SLAB's PRepBN).
"""
import copy
import inspect
from typing import Callable, Dict, Tuple, Type, Union

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['fuse', 'register_fuser', 'bn_affine', 'fold_bn_into', 'fold_affine_after', 'fold_affine_before']

_Conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FUSERS: Dict[Type[nn.Module], Callable[[nn.Module], nn.Module]] = {}


def register_fuser(cls: Type[nn.Module]):
    """Register ``fn(module) -> module`` as the fuser of ``cls`` (for classes that have no ``fuse()`` of their own)."""
    def wrap(fn):
        _FUSERS[cls] = fn
        return fn
    return wrap


def bn_affine(bn: _BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BatchNorm as a per-channel ``scale * x + shift``."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f'fuse: {type(bn).__name__} without running statistics cannot be folded')
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _unpadded(conv: nn.Module) -> bool:
    return conv.padding == 'valid' if isinstance(conv.padding, str) else not any(conv.padding)


def _new_like(layer: Union[nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d], weight, bias) -> nn.Module:
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, layer.out_features, bias=True,
                        device=weight.device, dtype=weight.dtype)
    else:
        new = type(layer)(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=True,
                          padding_mode=layer.padding_mode, device=weight.device, dtype=weight.dtype)
    new.weight.copy_(weight)
    new.bias.copy_(bias)
    return new


@torch.no_grad()
def fold_affine_after(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> nn.Module:
    """A Linear/Conv equal to ``scale * layer(x) + shift`` (per output channel)."""
    weight = layer.weight * scale.reshape(-1, *([1] * (layer.weight.dim() - 1)))
    bias = shift if layer.bias is None else layer.bias * scale + shift
    return _new_like(layer, weight, bias)


@torch.no_grad()
def fold_bn_into(layer: nn.Module, bn: _BatchNorm) -> nn.Module:
    """A Linear/Conv equal to ``bn(layer(x))`` in eval mode."""
    return fold_affine_after(layer, *bn_affine(bn))


@torch.no_grad()
def fold_affine_before(scale: torch.Tensor, shift: torch.Tensor, layer: nn.Module) -> nn.Module:
    """A Linear/Conv equal to ``layer(scale * x + shift)`` (per input channel).

    Exact for Linear and for convolutions without padding (a padded border would see ``shift`` where the original
    saw zeros).
    """
    if isinstance(layer, _Conv) and not _unpadded(layer):
        raise ValueError('fold_affine_before: a padded convolution cannot absorb an input shift exactly')
    w = layer.weight
    if isinstance(layer, nn.Linear):
        weight = w * scale[None, :]
        bias = w @ shift
    else:
        groups = layer.groups
        per_group = w.shape[1]
        s = scale.reshape(groups, 1, per_group)             # input channels of each group
        t = shift.reshape(groups, 1, per_group)
        wg = w.reshape(groups, w.shape[0] // groups, per_group, -1)
        weight = (wg * s[..., None]).reshape(w.shape)
        bias = (wg.sum(-1) * t).sum(-1).reshape(-1)
    if layer.bias is not None:
        bias = bias + layer.bias
    return _new_like(layer, weight, bias)


def _plain_bn(module: nn.Module) -> bool:
    return type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) and module.running_mean is not None


def _foldable_after(layer: nn.Module, bn: nn.Module) -> bool:
    if not _plain_bn(bn):
        return False
    if isinstance(layer, nn.Linear):
        return type(bn) is nn.BatchNorm1d and layer.out_features == bn.num_features
    return isinstance(layer, _Conv) and layer.out_channels == bn.num_features


def _foldable_before(bn: nn.Module, layer: nn.Module) -> bool:
    if not _plain_bn(bn):
        return False
    if isinstance(layer, nn.Linear):
        return type(bn) is nn.BatchNorm1d and layer.in_features == bn.num_features
    return isinstance(layer, _Conv) and layer.in_channels == bn.num_features and _unpadded(layer)


@torch.no_grad()
def _fold_sequential(seq: nn.Sequential) -> None:
    """Fold neighbouring pairs of a plain ``nn.Sequential`` (subclasses may have their own forward); the folded
    BatchNorm becomes an ``nn.Identity`` so that names and indices stay valid."""
    names = list(seq._modules)
    for first, second in zip(names, names[1:]):
        a, b = seq._modules[first], seq._modules[second]
        if _foldable_after(a, b):
            seq._modules[first], seq._modules[second] = fold_bn_into(a, b), nn.Identity()
        elif _foldable_before(a, b):
            seq._modules[first], seq._modules[second] = nn.Identity(), fold_affine_before(*bn_affine(a), b)


def _no_arg_method(module: nn.Module, name: str):
    fn = getattr(module, name, None)
    if not callable(fn) or isinstance(fn, nn.Module):
        return None
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return None if required else fn


def _fuse_one(module: nn.Module) -> nn.Module:
    for cls in type(module).__mro__:
        if cls in _FUSERS:
            return _FUSERS[cls](module)
    method = _no_arg_method(module, 'fuse')
    if method is not None:
        fused = method()
        return fused if isinstance(fused, nn.Module) else module
    method = _no_arg_method(module, 'reparameterize')
    if method is not None:
        method()
    return module


@torch.no_grad()
def _fuse_children(parent: nn.Module) -> None:
    for name, child in list(parent.named_children()):
        new = _fuse_one(child)
        if new is not child:
            setattr(parent, name, new)
        _fuse_children(new)
    if type(parent) is nn.Sequential:
        _fold_sequential(parent)


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` (or ``model`` itself with ``inplace=True``) with its norms folded.

    The result computes the same function as ``model.eval()`` (up to float rounding) with fewer layers; it is
    meant for inference and benchmarking, not for further training (BatchNorm statistics are baked in).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'fuse: model must be a torch.nn.Module, got {type(model).__name__}')
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    with torch.no_grad():
        root = _fuse_one(model)
        _fuse_children(root)
    return root.eval()
