"""Neighbourhood attention layer for NAT / DiNAT blocks, on :func:`visionzoo.ops.neighborhood_attention`."""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import neighborhood_attention

__all__ = ['NeighborhoodAttention2D']


def _pair(value, name: str) -> tuple:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2:
        raise ValueError(f'{name} must be one value or a pair (height, width), got {value!r}')
    return values


class NeighborhoodAttention2D(nn.Module):
    """2-D (dilated) neighbourhood attention over a channels-last map (batch, height, width, channels).

    ``qkv`` projection -> per-head neighbourhood attention with relative position bias -> ``proj`` -> dropout. The
    parameter names and shapes are those of the NAT / DiNAT checkpoints (NATTEN <= 0.17's module), so their
    state dicts load as they are:

    * ``qkv.weight`` (3 * dim, dim), ``qkv.bias`` (3 * dim,) — output channels ordered (q|k|v, head, head_dim);
    * ``rpb`` (num_heads, 2 * kh - 1, 2 * kw - 1) — relative position bias (absent when ``rel_pos_bias=False``);
    * ``proj.weight`` (dim, dim), ``proj.bias`` (dim,).

    As in that module, a map smaller than ``kernel_size * dilation`` along an axis is zero-padded at the bottom /
    right before the projection and cropped afterwards.

    Args:
        dim: channels.
        num_heads: attention heads (``dim`` must be divisible by it).
        kernel_size: window size, int or (height, width).
        dilation: int or (height, width).
        is_causal: bool or (height, width).
        qkv_bias: bias in the qkv projection.
        qk_scale: logit scale; None means ``head_dim ** -0.5``.
        rel_pos_bias: learn the relative position bias ``rpb`` (NAT/DiNAT: True).
        attn_drop: dropout on the attention weights; only 0 is supported (the fused op never forms the weights;
            the NAT/DiNAT recipes use 0 and regularise with drop-path).
        proj_drop: dropout after the output projection.
        backend: passed to the op (None: by device, or ``VISIONZOO_NA_BACKEND``).
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: Union[int, Tuple[int, int]],
                 dilation: Union[int, Tuple[int, int]] = 1, is_causal: Union[bool, Tuple[bool, bool]] = False,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, rel_pos_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, backend: Optional[str] = None):
        super().__init__()
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        if attn_drop != 0.0:
            raise ValueError(f'attn_drop must be 0 (the fused op has no dropout on attention weights), got {attn_drop}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_size = _pair(kernel_size, 'kernel_size')
        self.dilation = _pair(dilation, 'dilation')
        self.is_causal = _pair(is_causal, 'is_causal')
        self.backend = backend
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * self.kernel_size[0] - 1, 2 * self.kernel_size[1] - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        else:
            self.register_parameter('rpb', None)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f'x must have shape (batch, height, width, channels), got {tuple(x.shape)}')
        height, width = x.shape[1:3]
        pad_h, pad_w = (max(0, k * d - n) for k, d, n in zip(self.kernel_size, self.dilation, (height, width)))
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        qkv = self.qkv(x).reshape(*x.shape[:3], 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(3)
        x = neighborhood_attention(q, k, v, self.kernel_size, self.dilation, self.is_causal, rpb=self.rpb,
                                   scale=self.scale, backend=self.backend)
        x = x.reshape(*x.shape[:3], -1)[:, :height, :width]
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return (f'num_heads={self.num_heads}, head_dim={self.head_dim}, kernel_size={self.kernel_size}, '
                f'dilation={self.dilation}, is_causal={self.is_causal}, rel_pos_bias={self.rpb is not None}')
