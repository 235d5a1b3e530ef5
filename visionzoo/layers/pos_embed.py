"""Resampling of learned grid tokens (absolute position embeddings, SLA positional encodings) to another grid.

One function for Vim (a middle class token kept apart) and SLAB (no prefix token; PVT resamples bilinearly).
It is registered with timm's FX helpers and wrapped for ``torch.fx``: the early return for an unchanged grid
depends on the input size, so a traced model calls it as one node.
"""
from typing import Optional, Sequence

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import register_notrace_function

__all__ = ['resample_grid_tokens']


@torch.fx.wrap
@register_notrace_function
def resample_grid_tokens(tokens: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int],
                         mode: str = 'bicubic', cls_index: Optional[int] = None) -> torch.Tensor:
    """Resample (1, N[+1], C) row-major grid tokens from ``old_grid`` to ``new_grid`` (``align_corners=False``,
    computed in float32, returned in the tokens' dtype).

    ``cls_index`` is the position of a class token's entry (Vim's middle token: ``N // 2``), kept as is and
    re-inserted at ``new_N // 2``; None when there is no class token.
    """
    if tuple(old_grid) == tuple(new_grid):
        return tokens  # same token count, so a middle class token stays at the same index
    if cls_index is not None:
        cls_tok = tokens[:, cls_index:cls_index + 1]
        tokens = torch.cat((tokens[:, :cls_index], tokens[:, cls_index + 1:]), dim=1)
    gh, gw = old_grid
    grid = tokens.reshape(1, gh, gw, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(int(new_grid[0]), int(new_grid[1])), mode=mode, align_corners=False)
    out = grid.permute(0, 2, 3, 1).flatten(1, 2).to(tokens.dtype)
    if cls_index is None:
        return out
    middle = out.shape[1] // 2
    return torch.cat((out[:, :middle], cls_tok, out[:, middle:]), dim=1)
