"""The norm/activation factory (visionzoo.layers.norm_act): every accepted spelling, the layers it builds, and one
clear ArgumentError per bad spec."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from timm.layers import LayerNorm2d

from visionzoo.layers import LAYER_TYPES, build_act, build_norm
from visionzoo.layers.norm_act import norm_abbr
from visionzoo.utils.errors import ArgumentError


@pytest.mark.parametrize('cfg,cls,eps,abbr', [
    ('BN', nn.BatchNorm2d, 1e-5, 'bn'),
    (dict(type='BN', eps=1e-3, momentum=0.03), nn.BatchNorm2d, 1e-3, 'bn'),
    ('SyncBN', nn.SyncBatchNorm, 1e-5, 'bn'),
    (dict(type='SyncBN', requires_grad=True), nn.SyncBatchNorm, 1e-5, 'bn'),
    ('GN', nn.GroupNorm, 1e-5, 'gn'),
    (dict(type='GN', num_groups=16, eps=1e-6), nn.GroupNorm, 1e-6, 'gn'),
    ('LN', LayerNorm2d, 1e-6, 'ln'),
    (dict(type='LN', eps=1e-5), LayerNorm2d, 1e-5, 'ln'),
    (ConfigDict(type='LN', eps=1e-5), LayerNorm2d, 1e-5, 'ln'),  # as mmengine hands config dicts over
])
def test_every_norm_spelling_builds_its_layer(cfg, cls, eps, abbr):
    layer = build_norm(cfg, 64)
    assert type(layer) is cls and layer.eps == eps and norm_abbr(layer) == abbr
    assert all(p.requires_grad for p in layer.parameters())
    if cls is nn.GroupNorm:
        assert layer.num_channels == 64 and layer.num_groups == (cfg.get('num_groups') if isinstance(cfg, dict) else 32)
    elif cls is LayerNorm2d:
        assert layer.normalized_shape == (64,)
    else:
        assert layer.num_features == 64
    if isinstance(cfg, dict) and 'momentum' in cfg:
        assert layer.momentum == cfg['momentum']


def test_none_builds_nothing_and_requires_grad_false_freezes():
    assert build_norm(None, 8) is None and build_act(None) is None
    frozen = build_norm(dict(type='GN', num_groups=4, requires_grad=False), 8)
    assert [p.requires_grad for p in frozen.parameters()] == [False, False]


def test_layer_norm_normalises_each_pixel_over_channels():
    """'LN' on an NCHW map, against the formula written out (mean and biased variance over C per pixel)."""
    layer = build_norm(dict(type='LN', eps=1e-5), 6)
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    x = torch.randn(2, 6, 3, 5)
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize('cfg,cls,check', [
    ('ReLU', nn.ReLU, lambda m: not m.inplace),
    (dict(type='ReLU', inplace=True), nn.ReLU, lambda m: m.inplace),
    (dict(type='LeakyReLU', negative_slope=0.1), nn.LeakyReLU, lambda m: m.negative_slope == 0.1),
    ('SiLU', nn.SiLU, lambda m: True),
    (dict(type='GELU', approximate='tanh'), nn.GELU, lambda m: m.approximate == 'tanh'),
    ('Hardswish', nn.Hardswish, lambda m: True),
])
def test_every_activation_spelling_builds_its_layer(cfg, cls, check):
    layer = build_act(cfg)
    assert type(layer) is cls and check(layer)


@pytest.mark.parametrize('cfg,problem', [
    ('BatchNorm', r"expected None or one of \['BN', 'GN', 'LN', 'SyncBN'\]"),
    (dict(eps=1e-5), r"expected None or one of"),  # no type
    (3, r'expected None, a type name or dict\(type=\.\.\., \.\.\.\)'),
    (dict(type='GN', num_groups=3), r'GroupNorm num_groups=3 must divide the 20 channels'),
    (dict(type='GN', num_groups=0), r'GroupNorm num_groups=0 must divide the 20 channels'),
    (dict(type='BN', groups=2), r"bad options for BN: .*groups"),
    (dict(type='LN', eps=0), r'eps must be a positive number, got 0'),
    (dict(type='LN', requires_grad='no'), r"requires_grad must be True or False, got 'no'"),
])
def test_bad_norm_specs_name_the_owner_and_argument(cfg, problem):
    with pytest.raises(ArgumentError, match=r'^MyNeck\(norm_cfg=' + r'.*\): ' + problem):
        build_norm(cfg, 20, owner='MyNeck', arg='norm_cfg')


def test_allowed_limits_the_types_an_owner_takes():
    assert isinstance(build_norm('LN', 8, owner='TimmBackbone', arg='out_norm', allowed=('LN',)), LayerNorm2d)
    with pytest.raises(ArgumentError, match=r"^TimmBackbone\(out_norm='GN'\): expected None or one of \['LN'\]"):
        build_norm('GN', 8, owner='TimmBackbone', arg='out_norm', allowed=('LN',))


@pytest.mark.parametrize('cfg,problem', [
    ('Swish', r"expected None or one of \['GELU', 'Hardswish', 'LeakyReLU', 'ReLU', 'SiLU'\]"),
    (dict(type='ReLU', slope=0.1), r'bad options for ReLU: .*slope'),
    (['ReLU'], r'expected None, a type name'),
])
def test_bad_activation_specs_name_the_owner_and_argument(cfg, problem):
    with pytest.raises(ArgumentError, match=r'^FPN\(act=.*\): ' + problem):
        build_act(cfg, owner='FPN', arg='act')


def test_config_type_check_accepts_every_norm_and_activation_name():
    from mmengine.config import Config

    from visionzoo.engine.config import check_types
    from visionzoo.utils.errors import ConfigError
    assert LAYER_TYPES == {'BN', 'SyncBN', 'GN', 'LN', 'ReLU', 'LeakyReLU', 'SiLU', 'GELU', 'Hardswish'}
    cfg = Config(dict(model=dict(type='RetinaNet', neck=dict(type='FPN', norm=dict(type='GN'), act=dict(type='ReLU')),
                                 backbone=dict(type='TimmBackbone', out_norm=dict(type='LN', eps=1e-5)))))
    check_types(cfg, 'ok.py')
    with pytest.raises(ConfigError, match="model.neck.norm.type='GroupNorm'"):
        check_types(Config(dict(model=dict(neck=dict(norm=dict(type='GroupNorm'))))), 'bad.py')
