"""neighborhood_attention: the spatial rank of q against per-axis arguments, and a finite scale (issue #19)."""
import math

import pytest
import torch

from visionzoo.ops.neighborhood_attention import neighborhood_attention
from visionzoo.utils.errors import ArgumentError


def _qkv(*shape):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=g) for _ in range(3)]


def test_2d_arguments_with_a_4d_q_name_the_missing_heads_axis():
    q, k, v = _qkv(2, 8, 8, 16)  # (batch, x, y, dim): a 2-D map without its heads axis
    with pytest.raises(ArgumentError, match=r'^kernel_size must be an int >= 1 or a tuple of 1 such values .*got '
                       r'\(3, 3\); q of shape \(2, 8, 8, 16\) is 1-D attention \(batch, length, heads, dim\), 2-D '
                       r'attention takes q of shape \(batch, x, y, heads, dim\) \(is the heads axis missing\?\)$'):
        neighborhood_attention(q, k, v, kernel_size=(3, 3))
    with pytest.raises(ArgumentError, match=r'^dilation must be .*2-D attention takes q of shape \(batch, x, y, '
                       r'heads, dim\)'):
        neighborhood_attention(q, k, v, kernel_size=3, dilation=(1, 1))
    with pytest.raises(ArgumentError, match=r'^is_causal must be .*is the heads axis missing'):
        neighborhood_attention(q, k, v, kernel_size=3, is_causal=(False, False))
    with pytest.raises(ArgumentError, match=r'^rpb must have shape \(heads, 2k-1, \.\.\.\)=\(8, 5\), got \(8, 5, 5\); '
                       r'q of shape \(2, 8, 8, 16\) is 1-D attention .*is the heads axis missing'):
        neighborhood_attention(q, k, v, kernel_size=3, rpb=torch.zeros(8, 5, 5))


def test_too_few_per_axis_values_name_the_rank_too():
    q, k, v = _qkv(1, 6, 6, 6, 2, 4)  # 3-D
    with pytest.raises(ArgumentError, match=r'^kernel_size must be .*a tuple of 3 .*got \(3, 3\); q of shape '
                       r'\(1, 6, 6, 6, 2, 4\) is 3-D attention \(batch, x, y, z, heads, dim\), 2-D attention takes '
                       r'q of shape \(batch, x, y, heads, dim\)$'):
        neighborhood_attention(q, k, v, kernel_size=(3, 3))


@pytest.mark.parametrize('scale', [math.nan, math.inf, -math.inf, float('nan')])
def test_non_finite_scale_is_refused(scale):
    q, k, v = _qkv(1, 6, 2, 4)
    with pytest.raises(ArgumentError, match=r'^scale must be a finite real number or None, got (nan|inf|-inf)$'):
        neighborhood_attention(q, k, v, kernel_size=3, scale=scale)


def test_finite_scales_still_run():
    q, k, v = _qkv(1, 6, 2, 4)
    out = neighborhood_attention(q, k, v, kernel_size=3, scale=0.0, backend='reference')
    # scale 0: uniform weights over each window of 3 (the window shifts inward at the borders)
    windows = [(0, 3), (0, 3), (1, 4), (2, 5), (3, 6), (3, 6)]
    expected = torch.stack([v[:, a:b].mean(1) for a, b in windows], 1)
    torch.testing.assert_close(out, expected)
