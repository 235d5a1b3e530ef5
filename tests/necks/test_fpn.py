"""FPN and PAFPN: hand-written references, level shapes and strides, mmdet checkpoint layout, init, gradients,
fusion and config errors."""
import math

import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.necks.fpn import FPN, PAFPN
from visionzoo.registry import MODELS
from visionzoo.utils.errors import ArgumentError

# an image of 100 x 75 at strides 4/8/16/32, each stage halving its input rounding up (odd sizes on purpose)
SIZES = [(25, 19), (13, 10), (7, 5), (4, 3)]
CHANNELS = [3, 5, 7, 9]


def _maps(channels=CHANNELS, sizes=SIZES, batch=2):
    return [torch.randn(batch, c, h, w) for c, (h, w) in zip(channels, sizes)]


def _nearest(x, size):
    """PyTorch's 'nearest' resize: output pixel i reads input pixel floor(i * in / out)."""
    rows = torch.arange(size[0]) * x.shape[-2] // size[0]
    cols = torch.arange(size[1]) * x.shape[-1] // size[1]
    return x[..., rows[:, None], cols[None, :]]


def _conv(module, x, stride=1):
    weight = module.conv.weight
    return F.conv2d(x, weight, module.conv.bias, stride=stride, padding=weight.shape[-1] // 2)


def _halve(size):
    return (math.ceil(size[0] / 2), math.ceil(size[1] / 2))


def _reference_extras(neck, maps, laterals, outs, mode, relu_before):
    """The extra levels, written out: subsampling by 2 (max pool with kernel 1) or stride-2 convs."""
    used = len(laterals)
    for i in range(neck.num_outs - used):
        if not mode:
            outs.append(outs[-1][..., ::2, ::2])
            continue
        if i == 0:
            x = {'on_input': maps[-1], 'on_lateral': laterals[-1], 'on_output': outs[-1]}[mode]
        else:
            x = outs[-1].clamp(min=0) if relu_before else outs[-1]
        outs.append(_conv(neck.fpn_convs[used + i], x, stride=2))
    return outs


@pytest.mark.parametrize('mode', [False, 'on_input', 'on_lateral', 'on_output'])
def test_fpn_equals_hand_written_top_down(mode):
    torch.manual_seed(0)
    neck = FPN(CHANNELS, 4, num_outs=6, add_extra_convs=mode, relu_before_extra_convs=True).eval()
    maps = _maps()
    laterals = [_conv(m, x) for m, x in zip(neck.lateral_convs, maps)]
    merged = [laterals[-1]]
    for lat in reversed(laterals[:-1]):
        merged.insert(0, lat + _nearest(merged[0], lat.shape[-2:]))
    outs = [_conv(m, p) for m, p in zip(neck.fpn_convs, merged)]
    expected = _reference_extras(neck, maps, laterals, outs, mode, relu_before=True)
    got = neck(maps)
    assert isinstance(got, tuple) and len(got) == len(expected) == 6
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mode', [False, 'on_lateral', 'on_output'])
def test_pafpn_equals_hand_written_bottom_up(mode):
    torch.manual_seed(0)
    neck = PAFPN(CHANNELS, 4, num_outs=5, add_extra_convs=mode).eval()
    maps = _maps()
    laterals = [_conv(m, x) for m, x in zip(neck.lateral_convs, maps)]
    merged = [laterals[-1]]
    for lat in reversed(laterals[:-1]):
        merged.insert(0, lat + _nearest(merged[0], lat.shape[-2:]))
    inter = [_conv(m, p) for m, p in zip(neck.fpn_convs, merged)]
    for i in range(1, len(inter)):
        inter[i] = inter[i] + _conv(neck.downsample_convs[i - 1], inter[i - 1], stride=2)
    outs = [inter[0]] + [_conv(m, x) for m, x in zip(neck.pafpn_convs, inter[1:])]
    expected = _reference_extras(neck, maps, laterals, outs, mode, relu_before=False)
    got = neck(maps)
    assert len(got) == len(expected) == 5
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cls', [FPN, PAFPN])
@pytest.mark.parametrize('mode', [False, True, 'on_input', 'on_lateral', 'on_output'])
@pytest.mark.parametrize('num_outs', [4, 6])
def test_level_shapes_for_odd_sizes(cls, mode, num_outs):
    neck = cls(CHANNELS, 8, num_outs=num_outs, add_extra_convs=mode)
    outs = neck(_maps(batch=1))
    sizes = list(SIZES)
    while len(sizes) < num_outs:
        sizes.append(_halve(sizes[-1]))
    assert [tuple(o.shape) for o in outs] == [(1, 8, h, w) for h, w in sizes]
    assert len(neck.fpn_convs) == (num_outs if mode else 4)


def test_start_and_end_level_select_inputs():
    torch.manual_seed(0)
    neck = FPN(CHANNELS, 8, num_outs=2, start_level=1, end_level=2).eval()
    maps = _maps()
    outs = neck(maps)
    assert [o.shape[-2:] for o in outs] == [SIZES[1], SIZES[2]] and len(neck.lateral_convs) == 2
    changed = neck([torch.zeros_like(maps[0]), maps[1], maps[2], torch.zeros_like(maps[3])])
    for a, b in zip(outs, changed):
        torch.testing.assert_close(a, b)
    # end_level given as the last index: extra levels allowed (mmdet 3.x, inclusive)
    assert len(FPN(CHANNELS, 8, num_outs=5, start_level=1, end_level=3)(maps)) == 5


def test_retinanet_style_levels_strides_8_to_128():
    """start_level=1 and two stride-2 convs on the last input: strides 8..128 from a 4..32 backbone."""
    neck = FPN(CHANNELS, 8, num_outs=5, start_level=1, add_extra_convs='on_input')
    assert neck.fpn_convs[3].conv.in_channels == CHANNELS[-1]
    maps = [torch.randn(1, c, 256 // s, 256 // s) for c, s in zip(CHANNELS, (4, 8, 16, 32))]
    assert [256 // o.shape[-1] for o in neck(maps)] == [8, 16, 32, 64, 128]


def _mmdet_retinanet_r50_neck():
    """Keys and shapes of the neck of mmdet's RetinaNet R50-FPN checkpoints (FPN, start_level=1, on_input)."""
    keys = []
    for i, c in enumerate((512, 1024, 2048)):
        keys += [(f'lateral_convs.{i}.conv.weight', (256, c, 1, 1)), (f'lateral_convs.{i}.conv.bias', (256,))]
    for i in range(5):
        cin = 2048 if i == 3 else 256
        keys += [(f'fpn_convs.{i}.conv.weight', (256, cin, 3, 3)), (f'fpn_convs.{i}.conv.bias', (256,))]
    return keys


def test_mmdet_checkpoint_layout_loads_strictly():
    neck = FPN([256, 512, 1024, 2048], 256, num_outs=5, start_level=1, add_extra_convs='on_input')
    layout = _mmdet_retinanet_r50_neck()
    assert [(k, tuple(v.shape)) for k, v in neck.state_dict().items()] == layout
    neck.load_state_dict({k: torch.randn(s) for k, s in layout}, strict=True)


@pytest.mark.parametrize('norm,names', [('BN', ['bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var',
                                                'bn.num_batches_tracked']),
                                        (dict(type='GN', num_groups=4), ['gn.weight', 'gn.bias'])])
def test_norm_names_follow_mmcv_conv_module(norm, names):
    neck = PAFPN([4, 8], 8, num_outs=2, norm=norm, no_norm_on_lateral=True)
    keys = list(neck.state_dict())
    assert keys[:2] == ['lateral_convs.0.conv.weight', 'lateral_convs.0.conv.bias']  # no norm: bias
    for prefix in ('fpn_convs.0', 'downsample_convs.0', 'pafpn_convs.0'):
        assert [k[len(prefix) + 1:] for k in keys if k.startswith(prefix + '.')] == ['conv.weight'] + names


def test_xavier_uniform_init():
    neck = FPN([64, 128], 64, num_outs=3, add_extra_convs='on_output')
    for name, p in neck.named_parameters():
        if name.endswith('bias'):
            assert not p.any(), name
        else:
            fan_in, fan_out = p.shape[1] * p[0, 0].numel(), p.shape[0] * p[0, 0].numel()
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert p.abs().max() <= bound and p.std() > 0.9 * bound / math.sqrt(3), name


@pytest.mark.parametrize('cls', [FPN, PAFPN])
def test_gradients_reach_every_parameter(cls):
    torch.manual_seed(0)
    neck = cls(CHANNELS, 8, num_outs=6, add_extra_convs='on_output', relu_before_extra_convs=True, norm='BN',
               act='ReLU')
    outs = neck(_maps())
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fuse_folds_batch_norms():
    torch.manual_seed(0)
    neck = PAFPN(CHANNELS, 8, num_outs=5, add_extra_convs='on_input', norm='BN')
    for m in neck.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    neck.eval()
    fused = visionzoo.fuse(neck)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    maps = _maps()
    for a, b in zip(fused(maps), neck(maps)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


@pytest.mark.parametrize('kwargs,arg', [
    (dict(in_channels=[]), 'in_channels'),
    (dict(in_channels=[3, 0, 7, 9]), 'in_channels'),
    (dict(out_channels=0), 'out_channels'),
    (dict(num_outs=3), 'num_outs'),
    (dict(num_outs=4, end_level=1), 'num_outs'),
    (dict(end_level=4), 'end_level'),
    (dict(start_level=4), 'start_level'),
    (dict(add_extra_convs='on_top'), 'add_extra_convs'),
    (dict(norm='BatchNorm'), 'norm'),
    (dict(norm=dict(type='GN', num_groups=3)), 'norm'),
    (dict(norm=dict(type='BN', groups=2)), 'norm'),
    (dict(act='Swish'), 'act'),
    (dict(upsample_mode='area'), 'upsample_mode'),
])
@pytest.mark.parametrize('cls', [FPN, PAFPN])
def test_bad_config_names_the_argument(cls, kwargs, arg):
    args = dict(dict(in_channels=CHANNELS, out_channels=8, num_outs=4), **kwargs)
    with pytest.raises(ArgumentError, match=rf'^{cls.__name__}\({arg}=') as e:
        cls(**args)
    assert repr(args[arg]) in str(e.value)  # the message shows the value it refuses


def test_mismatched_inputs_are_argument_errors():
    neck = FPN(CHANNELS, 8, num_outs=4)
    with pytest.raises(ArgumentError, match=r'^FPN\(in_channels=\[3, 5, 7, 9\]\): built for 4 input maps, got 3'):
        neck(_maps()[1:])
    with pytest.raises(ArgumentError, match=r'^FPN\(in_channels=\[3, 5, 7, 9\]\): expected NCHW maps with these '
                       r'channels, got maps of shapes \[\(2, 3, 25, 19\), \(2, 5, 13, 10\), \(2, 7, 7, 5\), '
                       r'\(2, 8, 4, 3\)\]'):
        neck(_maps(channels=[3, 5, 7, 8]))
    with pytest.raises(ArgumentError, match=r'FPN\(num_outs=2\)'):  # through the registry: still an ArgumentError
        MODELS.build(dict(type='FPN', in_channels=CHANNELS, out_channels=8, num_outs=2))


def test_pafpn_explains_level_sizes_that_do_not_halve():
    neck = PAFPN([3, 5], 8, num_outs=2)
    with pytest.raises(ValueError, match='halve'):
        neck([torch.randn(1, 3, 7, 7), torch.randn(1, 5, 3, 3)])  # 7 -> 4 by a stride-2 conv, not 3
