"""Checkpoint-filter helpers shared by the backbone families."""
import re
from typing import Dict, Iterable, Sequence, Tuple

import torch

__all__ = ['unwrap_state_dict', 'rename_keys']


def unwrap_state_dict(checkpoint: dict, wrappers: Sequence[str] = ('model', 'state_dict', 'module'),
                      prefixes: Sequence[str] = ('module.',)) -> Dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint: the first of ``wrappers`` that holds a dict (official
    checkpoints keep theirs under ``model`` or ``state_dict``), with a DDP ``module.`` prefix stripped."""
    for key in wrappers:
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    out = {}
    for k, v in checkpoint.items():
        for prefix in prefixes:
            if k.startswith(prefix):
                k = k[len(prefix):]
                break
        out[k] = v
    return out


def rename_keys(state_dict: Dict[str, torch.Tensor], rules: Iterable[Tuple[str, str]]) -> Dict[str, torch.Tensor]:
    """Apply regex ``(pattern, replacement)`` rules, in order, to every key (``re.sub`` semantics)."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out = {}
    for k, v in state_dict.items():
        for pattern, replacement in compiled:
            k = pattern.sub(replacement, k)
        out[k] = v
    return out
