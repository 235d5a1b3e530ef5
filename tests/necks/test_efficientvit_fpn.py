"""EfficientViTFPN: strides 4..64 from EfficientViT-M0 features, a hand-written reference, the official
checkpoint layouts, level shapes, init, gradients and config errors."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from visionzoo.necks.efficientvit_fpn import EfficientViTFPN
from visionzoo.registry import MODELS
from visionzoo.utils.errors import ArgumentError

# stride-16/32/64 maps of a 100 x 76 image (halving rounds up), like EfficientViT-M / SHViT features
SIZES = [(7, 5), (4, 3), (2, 2)]
CHANNELS = [3, 5, 7]


def _maps(channels=CHANNELS, sizes=SIZES, batch=2):
    return [torch.randn(batch, c, h, w) for c, (h, w) in zip(channels, sizes)]


def _conv(module, x, stride=1):
    weight = module.conv.weight
    return F.conv2d(x, weight, module.conv.bias, stride=stride, padding=weight.shape[-1] // 2)


def test_efficientvit_m0_features_give_strides_4_to_64():
    torch.manual_seed(0)
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='efficientvit_m0')).eval()
    assert backbone.strides == [16, 32, 64]
    neck = MODELS.build(dict(type='EfficientViTFPN', in_channels=backbone.out_channels, out_channels=16,
                             num_outs=5))
    with torch.no_grad():
        outs = neck(backbone(torch.randn(1, 3, 128, 128)))
    assert [128 // o.shape[-1] for o in outs] == [4, 8, 16, 32, 64]
    assert all(o.shape[:2] == (1, 16) and o.shape[-2] == o.shape[-1] for o in outs)


def test_equals_hand_written_computation():
    """FPN top-down on the inputs, transposed convs on the first merged lateral, finest output first."""
    torch.manual_seed(0)
    neck = EfficientViTFPN(CHANNELS, 4, num_outs=7, num_extra_trans_convs=2, add_extra_convs='on_lateral',
                           relu_before_extra_convs=True).eval()
    maps = _maps()
    laterals = [_conv(m, x) for m, x in zip(neck.lateral_convs, maps)]
    # nearest upsampling from (2, 2) to (4, 3) and (4, 3) to (7, 5): rows/cols floor(i * in / out)
    p2 = laterals[2]
    p1 = laterals[1] + p2[..., [0, 0, 1, 1], :][..., [0, 0, 1]]
    p0 = laterals[0] + p1[..., [0, 0, 1, 1, 2, 2, 3], :][..., [0, 0, 1, 1, 2]]
    t = neck.extra_trans_convs
    s8 = F.conv_transpose2d(p0, t[0].conv.weight, t[0].conv.bias, stride=2)
    s4 = F.conv_transpose2d(s8, t[1].conv.weight, t[1].conv.bias, stride=2)
    outs = [_conv(neck.extra_fpn_convs[0], s4), _conv(neck.extra_fpn_convs[1], s8)]
    outs += [_conv(m, p) for m, p in zip(neck.fpn_convs, (p0, p1, p2))]
    outs.append(_conv(neck.fpn_convs[3], p2, stride=2))
    outs.append(_conv(neck.fpn_convs[4], outs[-1].clamp(min=0), stride=2))
    got = neck(maps)
    assert [o.shape[-2:] for o in got] == [(28, 20), (14, 10), (7, 5), (4, 3), (2, 2), (1, 1), (1, 1)]
    for g, e in zip(got, outs):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def _official_layout(in_channels, num_trans, extra_in=()):
    """Neck keys and shapes of the official EfficientViT/SHViT detection checkpoints (no norm: convs with bias)."""
    keys = []
    for i, c in enumerate(in_channels):
        keys += [(f'lateral_convs.{i}.conv.weight', (256, c, 1, 1)), (f'lateral_convs.{i}.conv.bias', (256,))]
    for i, c in enumerate([256] * len(in_channels) + list(extra_in)):
        keys += [(f'fpn_convs.{i}.conv.weight', (256, c, 3, 3)), (f'fpn_convs.{i}.conv.bias', (256,))]
    for i in range(num_trans):
        keys += [(f'extra_trans_convs.{i}.conv.weight', (256, 256, 2, 2)), (f'extra_trans_convs.{i}.conv.bias', (256,))]
    for i in range(num_trans):
        keys += [(f'extra_fpn_convs.{i}.conv.weight', (256, 256, 3, 3)), (f'extra_fpn_convs.{i}.conv.bias', (256,))]
    return keys


@pytest.mark.parametrize('in_channels', [[128, 256, 384], [224, 336, 448]], ids=['efficientvit_m4', 'shvit_s4'])
@pytest.mark.parametrize('detector', ['mask_rcnn', 'retinanet'])
def test_official_checkpoint_layouts_load_strictly(in_channels, detector):
    """The official configs: Mask R-CNN 2 transposed convs (strides 4..64); RetinaNet 1 and a stride-2 conv
    on the last input (strides 8..128)."""
    if detector == 'mask_rcnn':
        kwargs, layout = dict(num_extra_trans_convs=2), _official_layout(in_channels, 2)
    else:
        kwargs = dict(num_extra_trans_convs=1, add_extra_convs='on_input')
        layout = _official_layout(in_channels, 1, extra_in=[in_channels[-1]])
    neck = EfficientViTFPN(in_channels, 256, num_outs=5, **kwargs)
    assert [(k, tuple(v.shape)) for k, v in neck.state_dict().items()] == layout
    neck.load_state_dict({k: torch.randn(s) for k, s in layout}, strict=True)
    outs = neck([torch.randn(1, c, 8 >> i, 8 >> i) for i, c in enumerate(in_channels)])
    strides = [4, 8, 16, 32, 64] if detector == 'mask_rcnn' else [8, 16, 32, 64, 128]
    assert [128 // o.shape[-1] for o in outs] == strides


@pytest.mark.parametrize('num_trans', [0, 1, 2])
@pytest.mark.parametrize('mode', [False, 'on_input', 'on_output'])
def test_level_shapes(num_trans, mode):
    neck = EfficientViTFPN(CHANNELS, 8, num_outs=4 + num_trans, num_extra_trans_convs=num_trans,
                           add_extra_convs=mode)
    outs = neck(_maps(batch=1))
    h, w = SIZES[0]
    finer = [(h << k, w << k) for k in range(num_trans, 0, -1)]
    assert [tuple(o.shape) for o in outs] == [(1, 8, h, w) for h, w in finer + SIZES + [(1, 1)]]


def test_start_and_end_level():
    neck = EfficientViTFPN([3, 5, 7, 9], 8, num_outs=4, start_level=1, end_level=2, num_extra_trans_convs=2)
    outs = neck(_maps(channels=[3, 5, 7, 9], sizes=[(14, 10)] + SIZES))
    assert [o.shape[-2:] for o in outs] == [(28, 20), (14, 10), (7, 5), (4, 3)]


def test_init_as_official():
    neck = EfficientViTFPN([64, 64, 64], 64, num_outs=5)
    for m in neck.extra_trans_convs:
        w = m.conv.weight  # (in, out, 2, 2); Kaiming normal, fan-out = in * 4 as PyTorch counts it
        assert not m.conv.bias.any() and abs(w.std().item() / math.sqrt(2 / (64 * 4)) - 1) < 0.1
    for m in list(neck.extra_fpn_convs) + list(neck.fpn_convs) + list(neck.lateral_convs):
        bound = math.sqrt(6 / (m.conv.weight[0].numel() + m.conv.weight[:, 0].numel()))
        assert not m.conv.bias.any() and m.conv.weight.abs().max() <= bound


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    neck = EfficientViTFPN(CHANNELS, 8, num_outs=6, add_extra_convs='on_input', norm='BN', act='ReLU')
    outs = neck(_maps())
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_no_norm_on_lateral_also_covers_transposed_convs():
    keys = list(EfficientViTFPN(CHANNELS, 8, num_outs=5, norm='BN', no_norm_on_lateral=True).state_dict())
    assert 'extra_trans_convs.0.conv.bias' in keys and not any(k.startswith('extra_trans_convs.0.bn') for k in keys)
    assert 'extra_fpn_convs.0.bn.weight' in keys


@pytest.mark.parametrize('kwargs,arg', [
    (dict(num_outs=4), 'num_outs'),  # 3 inputs + 2 finer levels
    (dict(num_outs=5, end_level=1), 'num_outs'),
    (dict(num_extra_trans_convs=-1), 'num_extra_trans_convs'),
    (dict(num_extra_trans_convs=1.5), 'num_extra_trans_convs'),
    (dict(add_extra_convs='on_trans'), 'add_extra_convs'),
    (dict(norm='LayerNorm'), 'norm'),
    (dict(in_channels=7), 'in_channels'),
])
def test_bad_config_names_the_argument(kwargs, arg):
    args = dict(dict(in_channels=CHANNELS, out_channels=8, num_outs=5), **kwargs)
    with pytest.raises(ArgumentError, match=rf'^EfficientViTFPN\({arg}=') as e:
        EfficientViTFPN(**args)
    assert repr(args[arg]) in str(e.value)


def test_wrong_number_of_maps_is_an_argument_error():
    neck = EfficientViTFPN(CHANNELS, 8, num_outs=5)
    with pytest.raises(ArgumentError, match=rf'^EfficientViTFPN\(in_channels={re.escape(str(CHANNELS))}\): built for 3 '
                       r'input maps, got 2'):
        neck(_maps()[:2])
