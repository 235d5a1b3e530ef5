"""EfficientViT-M0…M5 (MSRA, cascaded group attention): timm's models, plus what timm lacks.

timm maintains the models (``efficientvit_m0`` … ``efficientvit_m5``); its ``checkpoint_filter_fn`` only accepts
timm's own layout. Importing this module extends that filter so the official microsoft/Cream checkpoints
(``efficientvit_m*.pth``, ``{'model': state_dict}``) load through ``timm.create_model(name, pretrained=True,
pretrained_cfg_overlay=dict(file=path))`` and through ``TimmBackbone(pretrained=path)``: official keys are renamed
to timm's, the ``attention_bias_idxs`` buffers (recomputed by timm) are dropped, and timm's filter then resizes the
attention biases if the window differs. timm-layout checkpoints pass through unchanged.

It also registers a fuser that folds timm's residual depthwise conv (``x + dw(x)``) into one conv after
:func:`visionzoo.fuse` has folded its BatchNorm.

The official detection code builds M0 with the query kernels ``(7, 5, 3, 3)`` (the classification M0 uses
``(5, 5, 5, 5)``): ``timm.create_model('efficientvit_m0', kernels=(7, 5, 3, 3))``, see
``configs/_base_/models/efficientvit-m0-det_backbone.py``.
"""
from typing import Dict

import torch
import torch.nn as nn
from timm.models import efficientvit_msra as _timm_evit

from ..layers.fuse import fuse, register_fuser
from ._checkpoint import rename_keys, unwrap_state_dict

__all__ = ['checkpoint_filter_fn', 'fold_residual_dwconv']

# microsoft/Cream EfficientViT/classification/model/efficientvit.py → timm/models/efficientvit_msra.py
_OFFICIAL_RULES = (
    (r'^patch_embed\.0\.', 'patch_embed.conv1.'),
    (r'^patch_embed\.2\.', 'patch_embed.conv2.'),
    (r'^patch_embed\.4\.', 'patch_embed.conv3.'),
    (r'^patch_embed\.6\.', 'patch_embed.conv4.'),
    (r'^blocks1\.', 'stages.0.blocks.'),
    # stages 2 and 3 start with [residual dw, residual ffn], patch merging, [residual dw, residual ffn]
    (r'^blocks([23])\.0\.', lambda m: f'stages.{int(m.group(1)) - 1}.downsample.res1.'),
    (r'^blocks([23])\.1\.', lambda m: f'stages.{int(m.group(1)) - 1}.downsample.patchmerge.'),
    (r'^blocks([23])\.2\.', lambda m: f'stages.{int(m.group(1)) - 1}.downsample.res2.'),
    (r'^blocks([23])\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{int(m.group(2)) - 3}.'),
    (r'\.c\.', '.conv.'),
    (r'^head\.l\.', 'head.linear.'),
)
# timm's own filter, also when this module is imported again (``importlib.reload``, a cleared ``sys.modules``): the
# installed wrapper remembers what it wraps, so wrapping never stacks and never calls itself
_timm_filter = getattr(_timm_evit.checkpoint_filter_fn, 'wraps_timm_filter', _timm_evit.checkpoint_filter_fn)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official (microsoft/Cream) or timm EfficientViT-M checkpoints → timm's ``EfficientVitMsra``.

    A distillation head (``head_dist``, only in checkpoints trained with ``--distillation-type``) has no place in
    timm's model and is dropped, as the official detection loader does.
    """
    state_dict = unwrap_state_dict(state_dict)
    if any(k.startswith('blocks1.') for k in state_dict):
        state_dict = {k: v for k, v in state_dict.items()
                      if not k.endswith('attention_bias_idxs') and not k.startswith('head_dist.')}
        state_dict = rename_keys(state_dict, _OFFICIAL_RULES)
    return _timm_filter(state_dict, model)


checkpoint_filter_fn.wraps_timm_filter = _timm_filter


@torch.no_grad()
def fold_residual_dwconv(residual: nn.Module) -> nn.Module:
    """``x + conv(x)`` with a stride-1 depthwise 'same' conv as one conv (identity added to the centre tap).

    Residuals around anything else are returned with their inner module fused.
    """
    inner = fuse(residual.m, inplace=True)
    residual.m = inner
    if not isinstance(inner, nn.Conv2d) or inner.groups != inner.in_channels or \
            inner.in_channels != inner.out_channels or inner.stride != (1, 1) or \
            any(k % 2 == 0 or p != k // 2 for k, p in zip(inner.kernel_size, inner.padding)) or \
            inner.dilation != (1, 1) or inner.padding_mode != 'zeros':
        return residual
    kh, kw = inner.kernel_size
    inner.weight[:, 0, kh // 2, kw // 2] += 1
    return inner


# the installed filter covers timm's layout too, so every caller of timm's builder gets both
_timm_evit.checkpoint_filter_fn = checkpoint_filter_fn
register_fuser(_timm_evit.ResidualDrop)(fold_residual_dwconv)
