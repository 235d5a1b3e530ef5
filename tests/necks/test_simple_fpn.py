"""SimpleFeaturePyramid (ViTDet): level shapes, per-level inputs, extra levels, bad input."""
import pytest
import torch

from visionzoo.necks import SimpleFeaturePyramid


def test_single_map_makes_every_level():
    neck = SimpleFeaturePyramid(in_channels=16, out_channels=8)
    outs = neck([torch.randn(2, 16, 8, 6)])
    assert [o.shape for o in outs] == [(2, 8, 32, 24), (2, 8, 16, 12), (2, 8, 8, 6), (2, 8, 4, 3)]


def test_one_map_per_level_uses_each_map():
    neck = SimpleFeaturePyramid(in_channels=[16] * 4, out_channels=8, norm=None).eval()
    maps = [torch.randn(1, 16, 4, 4) for _ in range(4)]
    outs = neck(maps)
    changed = neck([maps[0], maps[1], maps[2], torch.zeros_like(maps[3])])
    for i in range(3):
        torch.testing.assert_close(outs[i], changed[i])
    assert not torch.allclose(outs[3], changed[3])


def test_extra_levels_and_stride8_scales():
    neck = SimpleFeaturePyramid(in_channels=16, out_channels=8, scale_factors=(2.0, 1.0, 0.5), num_outs=5,
                                norm='BN')
    outs = neck(torch.randn(2, 16, 16, 16))
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4, 2]


@pytest.mark.parametrize('kwargs,pattern', [(dict(scale_factors=(3.0,)), 'scale_factors'),
                                            (dict(norm='GN'), 'norm'),
                                            (dict(in_channels=[16, 32]), 'in_channels'),
                                            (dict(num_outs=2), 'num_outs')])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SimpleFeaturePyramid(**dict(dict(in_channels=16, out_channels=8), **kwargs))


def test_wrong_number_of_inputs():
    neck = SimpleFeaturePyramid(in_channels=16, out_channels=8)
    with pytest.raises(ValueError, match='one map or 4 maps'):
        neck([torch.randn(1, 16, 4, 4)] * 2)
