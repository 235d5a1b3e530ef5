"""SHViT-S1…S4 (single-head vision transformer): timm's models, plus what timm lacks.

timm maintains the models (``shvit_s1`` … ``shvit_s4``), but its ``checkpoint_filter_fn`` is a no-op (timm's own
weights are pre-converted). Importing this module extends that filter so the official ysj9909/SHViT checkpoints
(``shvit_s*.pth``, ``{'model': state_dict}``) load through ``timm.create_model(name, pretrained=True,
pretrained_cfg_overlay=dict(file=path))`` and through ``TimmBackbone(pretrained=path)``. timm-layout checkpoints
pass through unchanged. timm's SHViT blocks fold themselves (``fuse()``), so :func:`visionzoo.fuse` needs nothing
more here.
"""
from typing import Dict

import torch
import torch.nn as nn
from timm.models import shvit as _timm_shvit

from ._checkpoint import rename_keys, unwrap_state_dict

__all__ = ['checkpoint_filter_fn']

# ysj9909/SHViT model/shvit.py → timm/models/shvit.py. Stages 2 and 3 start with a flattened downsample:
# [residual dw, residual ffn], patch merging, [residual dw, residual ffn] → downsample.0 … downsample.4
_OFFICIAL_RULES = (
    (r'^blocks1\.', 'stages.0.blocks.'),
    (r'^blocks([23])\.0\.([01])\.', lambda m: f'stages.{int(m.group(1)) - 1}.downsample.{m.group(2)}.'),
    (r'^blocks([23])\.1\.', lambda m: f'stages.{int(m.group(1)) - 1}.downsample.2.'),
    (r'^blocks([23])\.2\.([01])\.', lambda m: f'stages.{int(m.group(1)) - 1}.downsample.{int(m.group(2)) + 3}.'),
    (r'^blocks([23])\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{int(m.group(2)) - 3}.'),
)
# timm's own filter, also when this module is imported again (``importlib.reload``, a cleared ``sys.modules``): the
# installed wrapper remembers what it wraps, so wrapping never stacks and never calls itself
_timm_filter = getattr(_timm_shvit.checkpoint_filter_fn, 'wraps_timm_filter', _timm_shvit.checkpoint_filter_fn)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official (ysj9909/SHViT) or timm SHViT checkpoints → timm's ``SHViT`` (a distillation head is dropped)."""
    state_dict = unwrap_state_dict(state_dict)
    if any(k.startswith('blocks1.') for k in state_dict):
        state_dict = rename_keys({k: v for k, v in state_dict.items() if not k.startswith('head_dist.')},
                                 _OFFICIAL_RULES)
    return _timm_filter(state_dict, model)


checkpoint_filter_fn.wraps_timm_filter = _timm_filter

# the installed filter covers timm's layout too, so every caller of timm's builder gets both
_timm_shvit.checkpoint_filter_fn = checkpoint_filter_fn
