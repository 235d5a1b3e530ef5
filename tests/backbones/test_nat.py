"""NAT / DiNAT: the blocks against dense masked attention written plainly (outputs and every gradient, float64),
the models against the official model code (recorded logits), official layouts and checkpoints, parameter counts
of the official tables, input sizes and dense features.

Recording recipe (tests/data/official_layouts/{nat,dinat}_*.json): the official ``classification/nat.py`` and
``dinat.py`` of SHI-Labs/Neighborhood-Attention-Transformer (commit in each file's ``source``) copied to a folder
DIR, then ``python tests/backbones/test_nat.py --record DIR`` (this file's ``record``). The official code needs
NATTEN <= 0.17's ``NeighborhoodAttention2D`` module (relative position bias ``rpb``, padding of small maps), which
NATTEN 0.21 no longer has (its ``na2d`` has no bias); the recorder puts a stand-in ``natten`` module in
``sys.modules`` whose ``NeighborhoodAttention2D`` is that module's forward (pad, ``q * scale``, ``qk + rpb``,
softmax, ``av``, crop, ``proj``) with the neighbourhood product computed by :func:`dense_na` below, a dense masked
formulation that shares no code with visionzoo. After recording it checks :func:`dense_na` against NATTEN 0.21's
``na2d`` (zero bias) on every (padded) map size and dilation the recorded forwards ran. Weights:
:func:`conftest.synthetic_state_dict` (``seed``); input ``torch.randn(shape, generator=manual_seed(input_seed))``.
"""
import math
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import official_layout, synthetic_state_dict

import visionzoo.backbones.nat  # noqa: F401  (registers nat_*, dinat_*)
from visionzoo.backbones import TimmBackbone, create_timm_model
from visionzoo.backbones.nat import NAT, NatBlock, checkpoint_filter_fn
from visionzoo.utils.errors import ArgumentError

NAT_NAMES = ('nat_mini', 'nat_tiny', 'nat_small', 'nat_base')
DINAT_NAMES = ('dinat_mini', 'dinat_tiny', 'dinat_small', 'dinat_base', 'dinat_large', 'dinat_large_384')
LAYOUTS = ('nat_mini', 'nat_small', 'dinat_mini', 'dinat_small')


# ------------------------------------------------------------------------------------------------ the reference
def _window(n: int, kernel: int, dilation: int):
    """Per position of an axis of length n: the key positions of its neighbourhood and their bias indices
    (NATTEN's rule, written out: dilation groups ``i % d``; the window of ``kernel`` group positions centred on the
    query and shifted to stay inside its group; bias index = key - query in group coordinates + kernel - 1)."""
    keys, bias = [], []
    for i in range(n):
        group, pos = i % dilation, i // dilation
        length = len(range(group, n, dilation))
        start = min(max(pos - kernel // 2, 0), length - kernel)
        keys.append([(start + t) * dilation + group for t in range(kernel)])
        bias.append([start + t - pos + kernel - 1 for t in range(kernel)])
    return keys, bias


def dense_na(q, k, v, kernel: int, dilation: int, rpb=None, scale=None):
    """2-D neighbourhood attention as dense masked attention: q, k, v (B, heads, H, W, d) -> (B, heads, H, W, d).
    Logits ``scale * q.k + rpb`` for the keys of the neighbourhood, ``-inf`` elsewhere."""
    b, heads, height, width, dim = q.shape
    scale = dim ** -0.5 if scale is None else scale
    n = height * width
    keys_h, bias_h = (torch.tensor(t) for t in _window(height, kernel, dilation))  # (H, kernel) each
    keys_w, bias_w = (torch.tensor(t) for t in _window(width, kernel, dilation))
    # query (i, j), window entry (a, c): key (keys_h[i, a], keys_w[j, c]), bias rpb[:, bias_h[i, a], bias_w[j, c]]
    keys = (keys_h[:, None, :, None] * width + keys_w[None, :, None, :]).reshape(n, -1)
    rows = torch.arange(n)[:, None].expand_as(keys)
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[rows, keys] = True
    logits = scale * q.flatten(2, 3) @ k.flatten(2, 3).transpose(-1, -2)
    if rpb is not None:
        grid = (height, width, kernel, kernel)
        bias = rpb[:, bias_h[:, None, :, None].expand(grid), bias_w[None, :, None, :].expand(grid)]
        dense_bias = logits.new_zeros(heads, n, n)
        dense_bias[:, rows, keys] = bias.reshape(heads, n, -1)
        logits = logits + dense_bias
    logits = logits.masked_fill(~mask, float('-inf'))
    out = torch.softmax(logits, dim=-1) @ v.flatten(2, 3)
    return out.reshape(b, heads, height, width, dim)


def plain_attention(w, prefix, x, heads, kernel, dilation):
    """NATTEN <= 0.17's NeighborhoodAttention2D forward from the weights ``w[prefix + ...]`` on a (B, H, W, C) map:
    zero-pad the bottom / right to ``kernel * dilation``, qkv, :func:`dense_na` with ``rpb``, crop, proj."""
    b, height, width, c = x.shape
    window = kernel * dilation
    x = F.pad(x, (0, 0, 0, max(0, window - width), 0, max(0, window - height)))
    qkv = F.linear(x, w[prefix + 'qkv.weight'], w[prefix + 'qkv.bias'])
    q, k, v = qkv.reshape(b, *x.shape[1:3], 3, heads, c // heads).permute(3, 0, 4, 1, 2, 5)
    out = dense_na(q, k, v, kernel, dilation, w[prefix + 'rpb'], (c // heads) ** -0.5)
    out = out.permute(0, 2, 3, 1, 4).reshape(b, *x.shape[1:3], c)[:, :height, :width]
    return F.linear(out, w[prefix + 'proj.weight'], w[prefix + 'proj.bias'])


def plain_block(w, prefix, x, heads, kernel, dilation):
    """The official NATLayer: pre-norm attention and GELU MLP residuals, ``gamma1``/``gamma2`` when present."""
    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], w[name + '.weight'], w[name + '.bias'], eps=1e-5)  # nn.LayerNorm
    gamma1, gamma2 = w.get(prefix + 'gamma1', 1.), w.get(prefix + 'gamma2', 1.)
    x = x + gamma1 * plain_attention(w, prefix + 'attn.', ln(x, prefix + 'norm1'), heads, kernel, dilation)
    y = F.gelu(F.linear(ln(x, prefix + 'norm2'), w[prefix + 'mlp.fc1.weight'], w[prefix + 'mlp.fc1.bias']))
    return x + gamma2 * F.linear(y, w[prefix + 'mlp.fc2.weight'], w[prefix + 'mlp.fc2.bias'])


# --------------------------------------------------------------------------------------------------- the blocks
@pytest.mark.parametrize('size,dilation,layer_scale', [
    ((9, 11), 1, None),      # NAT layer, windows shifted at every border
    ((15, 12), 2, 0.5),      # DiNAT layer with layer scale: two dilation groups per axis, uneven on one
    ((5, 9), 2, None),       # map smaller than kernel * dilation on both axes: padded, as the official module
], ids=['nat', 'dinat', 'dinat-padded'])
def test_block_matches_dense_masked_attention(size, dilation, layer_scale):
    """Output, input gradient and every parameter gradient of a block against :func:`plain_block` (float64)."""
    torch.manual_seed(0)
    block = NatBlock(16, 2, kernel_size=3 if size == (5, 9) else 5, dilation=dilation, mlp_ratio=2,
                     layer_scale=layer_scale).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    kernel = block.attn.kernel_size[0]
    x = torch.randn(2, *size, 16, dtype=torch.float64, requires_grad=True)
    params = dict(block.named_parameters())
    upstream = torch.randn(2, *size, 16, dtype=torch.float64)
    out = block(x)
    grads = torch.autograd.grad(out, [x, *params.values()], upstream)
    expected = plain_block(params, '', x, 2, kernel, dilation)
    expected_grads = torch.autograd.grad(expected, [x, *params.values()], upstream)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    for name, g, e in zip(['input', *params], grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10, msg=lambda m, n=name: f'grad of {n}: {m}')
    assert set(params) >= {'attn.rpb', 'attn.qkv.weight', 'mlp.fc1.weight'}
    assert ('gamma1' in params) == (layer_scale is not None)


# ------------------------------------------------------------------------------------ the official model's logits
@pytest.mark.parametrize('name,key', [('nat_mini', 'logits'), ('dinat_mini', 'logits'),
                                      ('dinat_mini', 'padded_logits')])
def test_official_logits(name, key):
    """The model with the official model's synthetic weights gives the official model's logits: at 224² and at a
    size where every level is padded for its dilated layers (112 x 128: maps 28 x 32 ... 4 x 4 against windows of
    56 / 28 / 14 / 7). nat_mini's padded_logits (100 x 132) and nat_small's logits (layer scale) are recorded too;
    they are left out here to keep the suite fast (the layer-scale path is checked by the block test)."""
    layout = official_layout(name)
    model = timm.create_model(name).eval()
    model.load_state_dict(checkpoint_filter_fn({'model': synthetic_state_dict(layout['keys'], layout['seed'])}),
                          strict=True)
    shape = layout['input_shape' if key == 'logits' else 'padded_input_shape']
    img = torch.randn(shape, generator=torch.Generator().manual_seed(layout['input_seed']))
    with torch.no_grad():
        logits = model(img)[0]
    official = torch.tensor(layout[key])
    err = ((logits - official).abs().max() / official.abs().max()).item()
    assert err < 1e-5, f'{name}: output differs from the official model by {err:.2e} (relative)'


# ----------------------------------------------------------------------------------------- official checkpoints
@pytest.mark.parametrize('name', LAYOUTS)
def test_official_layout_is_ours(name):
    """Every official key with its shape, in the official order, and nothing else."""
    with torch.device('meta'):
        model = timm.create_model(name)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == official_layout(name)['keys']


@pytest.mark.parametrize('wrap,prefix', [(None, '')])  # under 'model': the logits tests
def test_official_checkpoint_loads_strictly(tmp_path, wrap, prefix):
    """The released files hold the bare state dict (official loader: ``model.load_state_dict(checkpoint)``) or,
    as timm training checkpoints, one under ``model`` / ``state_dict``."""
    sd = {prefix + k: v for k, v in synthetic_state_dict(official_layout('dinat_mini')['keys']).items()}
    path = tmp_path / 'ckpt.pth'
    torch.save({wrap: sd} if wrap else sd, path)
    loaded = create_timm_model('dinat_mini', pretrained=str(path)).state_dict()
    assert len(loaded) == len(sd)
    for k, v in sd.items():
        assert torch.equal(loaded[k[len(prefix):]], v), k


@pytest.mark.parametrize('key', ['levels.2.blocks.3.attn.rpb'])
def test_official_checkpoint_with_a_missing_key_names_it(tmp_path, key):
    from _helpers import assert_missing_key_is_reported
    state_dict = synthetic_state_dict(official_layout('nat_mini')['keys'])
    assert_missing_key_is_reported(tmp_path, lambda path: create_timm_model('nat_mini', pretrained=path),
                                   state_dict, key)


# ------------------------------------------------------------------------------------------- official numbers
@pytest.mark.parametrize('name,millions', [('nat_mini', 20), ('nat_tiny', 28), ('nat_small', 51), ('nat_base', 90),
                                           ('dinat_mini', 20), ('dinat_tiny', 28), ('dinat_small', 51),
                                           ('dinat_base', 90), ('dinat_large', 200), ('dinat_large_384', 200)])
def test_param_counts_match_official_tables(name, millions):
    """The official READMEs' parameter counts (classification/NAT.md, DiNAT.md), and exactly the official model's
    count where its layout is recorded."""
    with torch.device('meta'):
        model = timm.create_model(name)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / 1e6 - millions) < 1  # the tables round (20M for 19.98M) or truncate (200M for 200.94M)
    if name in LAYOUTS:
        assert count == sum(math.prod(shape) for _, shape in official_layout(name)['keys'])


# measured the same way (not run, to keep the suite fast): dinat_large 30.46 (30.6), dinat_large_384 89.51 (89.7)
@pytest.mark.parametrize('name,gflops', [('nat_mini', 2.7), ('nat_tiny', 4.3), ('nat_small', 7.8), ('nat_base', 13.7)])
def test_macs_match_official_tables(name, gflops, monkeypatch):
    """Multiply-accumulates at the cfg input size within 1% of the official "FLOPs" (fvcore with NATTEN's counter:
    convolutions, linear layers, and ``2 * H * W * kernel² * dim`` per neighbourhood attention for q.k and a.v).
    Counted on the meta device: ``FlopCounterMode`` for the convolutions and linear layers, the attention (stubbed
    out, it would be invisible inside the op) from its shapes."""
    import visionzoo.layers.neighborhood_attention as layer
    from torch.utils.flop_counter import FlopCounterMode
    attention = []

    def count(q, k, v, kernel_size, *args, **kwargs):
        attention.append(2 * q.numel() * kernel_size[0] * kernel_size[1])
        return q
    monkeypatch.setattr(layer, 'neighborhood_attention', count)
    with torch.device('meta'):
        model = timm.create_model(name).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(1, *model.pretrained_cfg['input_size']))
    macs = (counter.get_total_flops() / 2 + sum(attention)) / 1e9
    assert abs(macs / gflops - 1) < 0.01, f'{name}: {macs:.2f} GMACs vs {gflops} in the official table'


def test_dinat_dilations_and_layer_scale_are_official():
    """dinat.py: levels alternate 1 and 8 / 4 / 2 / 1 (13 / 6 / 3 / 1 at 384); layer scale only in DiNAT-B (and
    NAT-S/B)."""
    def dilations(model):
        return [[b.attn.dilation[0] for b in level.blocks] for level in model.levels]
    with torch.device('meta'):
        mini, small, base, large384 = (timm.create_model(n) for n in ('dinat_mini', 'dinat_small', 'dinat_base',
                                                                       'dinat_large_384'))
        nat_small = timm.create_model('nat_small')
    assert dilations(mini) == [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 3, [1] * 5]
    assert dilations(base)[2] == [1, 2] * 9
    assert dilations(large384)[:3] == [[1, 13, 1], [1, 6, 1, 6], [1, 3] * 9]
    assert not small.levels[0].blocks[0].layer_scale and base.levels[0].blocks[0].layer_scale
    assert nat_small.levels[0].blocks[0].layer_scale
    assert all(b.attn.kernel_size == (7, 7) for b in base.levels[3].blocks)


# ----------------------------------------------------------------------------------------- sizes and dense use
def test_small_and_odd_inputs_and_dense_features():
    """Levels smaller than the window are padded (64 x 40: maps 16 x 10 ... 2 x 2 against windows up to 7 * 8);
    strides 4 / 8 / 16 / 32 through features_only and TimmBackbone with the official per-output LayerNorms."""
    model = timm.create_model('dinat_mini', depths=(1, 2, 2, 1), num_classes=3).eval()
    img = torch.randn(1, 3, 64, 40)
    with torch.no_grad():
        assert model(img).shape == (1, 3)
        feats = model.forward_intermediates(img, intermediates_only=True)
    assert [tuple(f.shape) for f in feats] == [(1, 64, 16, 10), (1, 128, 8, 5), (1, 256, 4, 3), (1, 512, 2, 2)]
    backbone = TimmBackbone('nat_mini', out_indices=(0, 1, 2, 3), out_norm='LN', depths=(1, 1, 1, 1))
    assert backbone.strides == [4, 8, 16, 32] and backbone.out_channels == [64, 128, 256, 512]
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 96, 72))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 24, 18), (1, 128, 12, 9), (1, 256, 6, 5), (1, 512, 3, 3)]


def test_training_step_on_cpu_reaches_every_parameter():
    model = timm.create_model('dinat_mini', depths=(1, 2, 1, 1), num_classes=4, drop_path_rate=0.1).train()
    model(torch.randn(2, 3, 48, 56)).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize('kwargs,arg', [(dict(dilations=[[1, 2]] * 4), 'dilations'),
                                        (dict(num_heads=(2, 4)), 'num_heads'),
                                        (dict(attn_drop_rate=0.1), 'attn_drop_rate')])
def test_bad_config_is_a_clear_error(kwargs, arg):
    with pytest.raises(ArgumentError, match=rf'^NAT\({arg}='):
        NAT(**kwargs)


def test_registered_names_and_default_cfgs():
    assert set(timm.list_models('nat_*')) == set(NAT_NAMES)
    assert set(timm.list_models('dinat_*')) == set(DINAT_NAMES)
    cfg = timm.models.get_pretrained_cfg('dinat_tiny.in1k').to_dict()
    assert cfg['url'] == 'https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_tiny_in1k_224.pth'
    assert timm.models.get_pretrained_cfg('nat_base.in1k').url.endswith('/nat/checkpoints/CLS/nat_base.pth')
    assert timm.models.get_pretrained_cfg('dinat_large_384').input_size == (3, 384, 384)


# ------------------------------------------------------------------------------------------------- the recorder
def _check_dense_na_against_natten(kernel: int, shapes_dilations):
    import natten.functional
    for height, width, dilation in shapes_dilations:
        q, k, v = (torch.randn(1, height, width, 2, 8) for _ in range(3))
        expected = natten.functional.na2d(q, k, v, kernel_size=kernel, dilation=dilation)
        got = dense_na(*(t.permute(0, 3, 1, 2, 4) for t in (q, k, v)), kernel, dilation).permute(0, 2, 3, 1, 4)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def record(official_dir: str, out_dir: str = 'tests/data/official_layouts'):  # pragma: no cover (recipe)
    import json
    import os
    import types

    from torch import nn

    class NeighborhoodAttention2D(nn.Module):
        """NATTEN <= 0.17's module (state: qkv, rpb, proj), its attention through :func:`dense_na`."""

        def __init__(self, dim, num_heads, kernel_size, dilation=None, qkv_bias=True, qk_scale=None,
                     attn_drop=0.0, proj_drop=0.0, rel_pos_bias=True):
            super().__init__()
            self.num_heads, self.kernel_size, self.dilation = num_heads, kernel_size, dilation or 1
            self.scale = qk_scale or (dim // num_heads) ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            window = self.kernel_size * self.dilation
            runs.add((max(window, x.shape[1]), max(window, x.shape[2]), self.dilation))
            w = dict(self.named_parameters())
            return plain_attention(w, '', x, self.num_heads, self.kernel_size, self.dilation)

    runs = set()  # (height, width, dilation) of every neighbourhood attention the recorded forwards run
    shim = types.ModuleType('natten')
    shim.NeighborhoodAttention2D = NeighborhoodAttention2D
    shim.context = None  # official: is_natten_post_017 = hasattr(natten, "context") -> rel_pos_bias=True
    saved = sys.modules.get('natten')
    sys.path.insert(0, official_dir)
    sys.modules['natten'] = shim
    try:
        import dinat as official_dinat
        import nat as official_nat
    finally:
        sys.modules.pop('natten')
        if saved is not None:
            sys.modules['natten'] = saved
    source = ('SHI-Labs/Neighborhood-Attention-Transformer@d334f5b classification/{file} {fn}(), with NATTEN <= 0.17 '
              "NeighborhoodAttention2D's forward as the stand-in module of this file's recorder")
    plan = {'nat_mini': (official_nat, 'nat.py', (1, 3, 100, 132)), 'nat_small': (official_nat, 'nat.py', None),
            'dinat_mini': (official_dinat, 'dinat.py', (1, 3, 112, 128)),
            'dinat_small': (official_dinat, 'dinat.py', None)}
    for name, (module, file, padded) in plan.items():
        torch.manual_seed(0)
        model = getattr(module, name)().eval()
        keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
        entry = dict(source=source.format(file=file, fn=name), keys=keys, seed=0, input_seed=1,
                     note='logits: the official model loaded with synthetic_state_dict(keys, seed) on '
                          'torch.randn(input_shape, generator=torch.Generator().manual_seed(input_seed)); '
                          'padded_logits: the same on padded_input_shape (levels smaller than kernel * dilation)')
        if name != 'dinat_small':
            model.load_state_dict(synthetic_state_dict(keys, 0), strict=True)
            shapes = [('logits', 'input_shape', (1, 3, 224, 224))] + ([('padded_logits', 'padded_input_shape',
                                                                       padded)] if padded else [])
            for key, shape_key, shape in shapes:
                img = torch.randn(shape, generator=torch.Generator().manual_seed(1))
                with torch.no_grad():
                    entry[shape_key], entry[key] = list(shape), [round(x, 6) for x in model(img)[0].tolist()]
        with open(os.path.join(out_dir, f'{name}.json'), 'w') as f:
            json.dump(entry, f)
        print(name, len(keys), 'keys')
    _check_dense_na_against_natten(7, sorted(runs))  # the stand-in's window rule is NATTEN's on every run
    print('dense_na == natten.functional.na2d on', sorted(runs))


if __name__ == '__main__':  # pragma: no cover
    if sys.argv[1:2] == ['--record']:
        record(sys.argv[2])


def test_official_dense_checkpoint_output_norms_map_to_out_norms():
    """The official detection/segmentation NAT keeps a LayerNorm per output as norm{i} (detection/nat.py): they map
    to TimmBackbone's out_norms; the classification model's final norm and head are dropped."""
    import timm

    from visionzoo.registry import MODELS
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='nat_mini', out_indices=(1, 2, 3),
                                 out_norm=dict(type='LN', eps=1e-5)))
    state = {k: v for k, v in timm.create_model('nat_mini').state_dict().items() if not k.startswith('head')}
    for i, c in enumerate((64, 128, 256, 512)):
        state[f'norm{i}.weight'] = torch.full((c,), float(i))
        state[f'norm{i}.bias'] = torch.zeros(c)
    backbone.load_state_dict(backbone.convert_state_dict(state), strict=True)
    assert [float(n.weight[0]) for n in backbone.out_norms] == [1.0, 2.0, 3.0]
