"""SimpleFeaturePyramid (ViTDet): level shapes, per-level inputs, extra levels, bad input."""
import pytest
import torch

from visionzoo.necks import SimpleFeaturePyramid
from visionzoo.utils.errors import ArgumentError


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


@pytest.mark.parametrize('kwargs,pattern', [(dict(scale_factors=(3.0,)), r'scale_factors=\(3\.0,\)'),
                                            (dict(norm='GN'), "norm='GN'"),
                                            (dict(norm=dict(type='LN', eps=0)), r"norm=\{'type': 'LN', 'eps': 0\}"),
                                            (dict(in_channels=[16, 32]), r'in_channels=\[16, 32\]'),
                                            (dict(num_outs=2), 'num_outs=2')])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ArgumentError, match=rf'^SimpleFeaturePyramid\({pattern}\): '):
        SimpleFeaturePyramid(**dict(dict(in_channels=16, out_channels=8), **kwargs))


def test_norm_spellings_build_the_same_layers():
    """'LN' and dict(type='LN') are timm's LayerNorm2d (eps 1e-6 unless given), in the same places: same keys."""
    from timm.layers import LayerNorm2d
    by_name = SimpleFeaturePyramid(in_channels=16, out_channels=8, norm='LN')
    by_dict = SimpleFeaturePyramid(in_channels=16, out_channels=8, norm=dict(type='LN', eps=1e-5))
    assert list(by_name.state_dict()) == list(by_dict.state_dict())
    assert 'lateral.0.1.weight' in by_name.state_dict() and 'lateral.0.0.bias' not in by_name.state_dict()
    for neck, eps in ((by_name, 1e-6), (by_dict, 1e-5)):
        norms = [m for m in neck.modules() if isinstance(m, LayerNorm2d)]
        assert len(norms) == 9 and all(m.eps == eps for m in norms)  # 1 in the x4 branch, 2 per level
    plain = SimpleFeaturePyramid(in_channels=16, out_channels=8, norm=None)
    assert 'lateral.0.0.bias' in plain.state_dict() and not any(isinstance(m, LayerNorm2d) for m in plain.modules())


def test_wrong_number_of_inputs():
    neck = SimpleFeaturePyramid(in_channels=16, out_channels=8)
    with pytest.raises(ArgumentError, match=r'^SimpleFeaturePyramid\(scale_factors=\(4\.0, 2\.0, 1\.0, 0\.5\)\): '
                       r'takes one map or 4 maps \(one per level\), got 2'):
        neck([torch.randn(1, 16, 4, 4)] * 2)
