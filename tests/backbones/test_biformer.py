"""BiFormer: official logits and layouts, the model against a plain composition of the official code, parameter and
MAC counts of the paper, input sizes, dense features, timm contract.

The official layouts and logits (tests/data/official_layouts/biformer_*.json) were recorded from the official
model code (rayleizhu/BiFormer, commit in each fixture's ``source``) with :func:`conftest.synthetic_state_dict`
weights.
"""
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import official_layout, synthetic_state_dict
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import visionzoo.backbones.biformer  # noqa: F401  (registers biformer_*)
from visionzoo.backbones import create_timm_model
from visionzoo.backbones.biformer import BiFormer, checkpoint_filter_fn
from visionzoo.registry import MODELS

NAMES = ('biformer_tiny', 'biformer_small', 'biformer_base')
# 3 x 3 regions: topk 1 and 2 run the op's chunked formulation on CPU, topk 4 its dense masked one
TINY = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 32), head_dim=8, n_win=3, topks=(1, 2, 4, -2))


# ------------------------------------------------------------------------------ plain composition (the reference)
# Constants of the official code (rayleizhu/BiFormer: models/biformer.py ``Block`` and ``BiFormer``, models/_common.py
# ``AttentionLePE``, ops/bra_legacy.py ``BiLevelRoutingAttention``), written down here and never read from the model
# under test: the reference takes only its weight tensors (and the configuration the test built it with).
OFFICIAL_LN_EPS = 1e-6            # Block.norm1 / norm2: nn.LayerNorm(dim, eps=1e-6)
OFFICIAL_BN_EPS = 1e-5            # nn.BatchNorm2d's default: stem, downsampling layers, final norm
OFFICIAL_POS_EMBED_PADDING = 1    # Block.pos_embed: 3 x 3 depthwise conv with padding=1
OFFICIAL_LEPE_PADDING = 5 // 2    # side_dwconv=5: 5 x 5 depthwise conv
OFFICIAL_LAST_STAGE_HEADS = 8     # topk=-2: AttentionLePE(dim=dim) with its default num_heads=8


def weights(model):
    """The model's parameters and buffers by name: the live tensors, so autograd reaches the parameters."""
    return {**dict(model.named_buffers()), **dict(model.named_parameters())}


def official_bra(w, prefix, x, n_win, topk, head_dim):
    """``BiLevelRoutingAttention.forward`` (ops/bra_legacy.py; auto_pad=True, kv_downsample_mode='identity',
    param_attention='qkvo') on an NHWC x with the weights ``w[prefix + ...]``: zero-pad at the bottom and right to
    multiples of n_win, one qkv projection, n_win² regions, routing on the detached region means of q and k with
    scale ``qk_dim ** -0.5``, ``torch.gather`` of the top-k regions' k and v from an expanded view, softmax attention
    with the same scale, LePE on the (padded) v map, the output projection ``wo``, crop."""
    n, height, width, c = x.shape
    qkv_weight = w[prefix + 'qkv.qkv.weight']
    qk = (qkv_weight.shape[0] - c) // 2  # QKVLinear: dim -> qk_dim + qk_dim + dim
    heads, scale, s = qk // head_dim, qk ** -0.5, n_win
    x = F.pad(x, (0, 0, 0, (s - width % s) % s, 0, (s - height % s) % s))
    hp, wp = x.shape[1:3]
    rh, rw = hp // s, wp // s
    q, kv = F.linear(x, qkv_weight, w[prefix + 'qkv.qkv.bias']).split([qk, qk + c], dim=-1)

    def regions(t):  # 'n (j h) (i w) c -> n (j i) (h w) c'
        return t.reshape(n, s, rh, s, rw, -1).permute(0, 1, 3, 2, 4, 5).reshape(n, s * s, rh * rw, -1)
    q_pix, kv_pix = regions(q), regions(kv)
    q_win, k_win = q_pix.mean(2).detach(), kv_pix[..., :qk].mean(2).detach()
    r_idx = torch.topk((q_win * scale) @ k_win.transpose(-1, -2), topk, dim=-1).indices  # (n, s², topk)
    sel = torch.gather(kv_pix.view(n, 1, s * s, rh * rw, qk + c).expand(-1, s * s, -1, -1, -1), 2,
                       r_idx.view(n, s * s, topk, 1, 1).expand(-1, -1, -1, rh * rw, qk + c))
    k_sel, v_sel = sel.split([qk, c], dim=-1)  # (n, s², topk, rh rw, .)
    k_sel = k_sel.reshape(n * s * s, topk * rh * rw, heads, qk // heads).permute(0, 2, 3, 1)
    v_sel = v_sel.reshape(n * s * s, topk * rh * rw, heads, c // heads).transpose(1, 2)
    q_pix = q_pix.reshape(n * s * s, rh * rw, heads, qk // heads).transpose(1, 2)
    out = torch.softmax((q_pix * scale) @ k_sel, dim=-1) @ v_sel  # (n s², heads, rh rw, c / heads)
    out = out.transpose(1, 2).reshape(n, s, s, rh, rw, c).permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, c)
    lepe = F.conv2d(kv[..., qk:].permute(0, 3, 1, 2), w[prefix + 'lepe.weight'], w[prefix + 'lepe.bias'],
                    padding=OFFICIAL_LEPE_PADDING, groups=c).permute(0, 2, 3, 1)
    return F.linear(out + lepe, w[prefix + 'wo.weight'], w[prefix + 'wo.bias'])[:, :height, :width]


def official_attention_lepe(w, prefix, x):
    """``AttentionLePE.forward`` (models/_common.py): 8 heads, scale ``(dim // 8) ** -0.5``, qkv without bias, LePE
    on the input, ``proj``."""
    n, height, width, c = x.shape
    heads = OFFICIAL_LAST_STAGE_HEADS
    t = x.reshape(n, height * width, c)
    q, k, v = F.linear(t, w[prefix + 'qkv.weight']).reshape(n, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    out = torch.softmax((q @ k.transpose(-1, -2)) * (c // heads) ** -0.5, dim=-1) @ v
    out = out.transpose(1, 2).reshape(n, height * width, c)
    lepe = F.conv2d(x.permute(0, 3, 1, 2), w[prefix + 'lepe.weight'], w[prefix + 'lepe.bias'],
                    padding=OFFICIAL_LEPE_PADDING, groups=c)
    out = out + lepe.flatten(2).transpose(1, 2)
    return F.linear(out, w[prefix + 'proj.weight'], w[prefix + 'proj.bias']).reshape(n, height, width, c)


def official_biformer(w, img, n_win, topks, head_dim, training=False):
    """``BiFormer.forward`` (models/biformer.py) from the official-layout weights ``w``: conv stem (two stride-2
    3 x 3 convs, BatchNorm, GELU between), stride-2 conv + BatchNorm downsampling, pre-norm blocks (depthwise conv
    position embedding on NCHW, then NHWC LayerNorm -> attention, LayerNorm -> Linear-GELU-Linear MLP), final
    BatchNorm, spatial mean, linear head. ``training``: BatchNorm on batch statistics. Blocks per stage are read
    from the weight names."""
    def batch_norm(x, name):
        stats = (None, None) if training else (w[name + '.running_mean'], w[name + '.running_var'])
        return F.batch_norm(x, *stats, w[name + '.weight'], w[name + '.bias'], training=training, eps=OFFICIAL_BN_EPS)

    def down(x, name):
        return F.conv2d(x, w[name + '.weight'], w[name + '.bias'], stride=2, padding=1)

    def layer_norm(x, name):
        return F.layer_norm(x, x.shape[-1:], w[name + '.weight'], w[name + '.bias'], eps=OFFICIAL_LN_EPS)

    x = batch_norm(down(img, 'downsample_layers.0.0'), 'downsample_layers.0.1')
    x = batch_norm(down(F.gelu(x), 'downsample_layers.0.3'), 'downsample_layers.0.4')
    for i in range(4):
        if i:
            x = batch_norm(down(x, f'downsample_layers.{i}.0'), f'downsample_layers.{i}.1')
        j = 0
        while f'stages.{i}.{j}.norm1.weight' in w:
            p = f'stages.{i}.{j}.'
            x = x + F.conv2d(x, w[p + 'pos_embed.weight'], w[p + 'pos_embed.bias'], padding=OFFICIAL_POS_EMBED_PADDING,
                             groups=x.shape[1])
            x = x.permute(0, 2, 3, 1)
            y = layer_norm(x, p + 'norm1')
            x = x + (official_bra(w, p + 'attn.', y, n_win, topks[i], head_dim) if topks[i] > 0 else
                     official_attention_lepe(w, p + 'attn.', y))
            y = F.gelu(F.linear(layer_norm(x, p + 'norm2'), w[p + 'mlp.0.weight'], w[p + 'mlp.0.bias']))
            x = (x + F.linear(y, w[p + 'mlp.3.weight'], w[p + 'mlp.3.bias'])).permute(0, 3, 1, 2)
            j += 1
        assert j > 0, f'no blocks of stage {i} in the weights'
    x = batch_norm(x, 'norm')
    return F.linear(x.flatten(2).mean(-1), w['head.weight'], w['head.bias'])


def official_tiny(model, img, training=False):
    """:func:`official_biformer` with the weights of a :func:`tiny_model` and the TINY configuration."""
    return official_biformer(weights(model), img, TINY['n_win'], TINY['topks'], TINY['head_dim'], training)


def randomize_(model, seed=0):
    """Non-trivial values everywhere, incl. BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith('running_var'):
                t.uniform_(0.5, 1.5, generator=g)
            elif t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.1)
    return model


def tiny_model(**kwargs):
    torch.manual_seed(0)
    return randomize_(BiFormer(**dict(TINY, num_classes=5, **kwargs)))


# ------------------------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize('size', [(96, 96), (40, 56), (72, 36)], ids=['divisible', 'padded', 'padded-tall'])
def test_model_matches_plain_official_forward(size):
    """Eval forward against the plain official composition, also where every stage pads (40 x 56: maps 10 x 14,
    5 x 7, 3 x 4 with 3 regions per side)."""
    model = tiny_model().eval()
    img = torch.randn(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(model(img), official_tiny(model, img), atol=2e-5, rtol=1e-4)


def test_model_gradients_match_plain_official_composition():
    """Training step (BatchNorm in train mode): every parameter gradient equals autograd through the official
    formulation (gather backward)."""
    model = tiny_model().train()
    img = torch.randn(2, 3, 40, 56)
    loss = model(img).logsumexp(-1).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = torch.autograd.grad(official_tiny(model, img, training=True).logsumexp(-1).sum(),
                                   list(model.parameters()))
    for (name, _), g, e in zip(model.named_parameters(), grads, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f'grad of {n}: {m}')


@pytest.mark.parametrize('key,shape_key', [('logits', 'input_shape'), ('padded_logits', 'padded_input_shape')])
def test_official_logits(key, shape_key):
    """biformer_tiny with the official model's synthetic weights gives the official logits: at 224² (the released
    model), and at 200 x 264 (padding in every stage; official ``auto_pad=True``)."""
    layout = official_layout('biformer_tiny')
    model = timm.create_model('biformer_tiny').eval()
    checkpoint = {'model': synthetic_state_dict(layout['keys'], layout['seed'])}
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model), strict=True)
    img = torch.randn(layout[shape_key], generator=torch.Generator().manual_seed(layout['input_seed']))
    with torch.no_grad():
        logits = model(img)[0]
    official = torch.tensor(layout[key])
    err = ((logits - official).abs().max() / official.abs().max()).item()
    assert err < 1e-5, f'output differs from the official model by {err:.2e} (relative)'


@pytest.mark.parametrize('key,shape_key', [('logits', 'input_shape'), ('padded_logits', 'padded_input_shape')])
def test_reference_reproduces_official_logits(key, shape_key):
    """The reference itself against the official model: the recorded official weights and input through
    :func:`official_biformer` with the official biformer_tiny configuration (models/biformer.py: n_win 7,
    topks 1-4-16-(-2), head_dim 32) give the recorded official logits, with no model of ours involved."""
    layout = official_layout('biformer_tiny')
    w = synthetic_state_dict(layout['keys'], layout['seed'])
    img = torch.randn(layout[shape_key], generator=torch.Generator().manual_seed(layout['input_seed']))
    with torch.no_grad():
        logits = official_biformer(w, img, n_win=7, topks=(1, 4, 16, -2), head_dim=32)[0]
    official = torch.tensor(layout[key])
    err = ((logits - official).abs().max() / official.abs().max()).item()
    assert err < 1e-5, f'the reference differs from the official model by {err:.2e} (relative)'


# ------------------------------------------------------------------------------------------- paper-level numbers
@pytest.mark.parametrize('name,params', [('biformer_tiny', 13.143), ('biformer_small', 25.536),
                                         ('biformer_base', 56.805)])
def test_param_counts_match_paper(name, params):
    """With the head: 13.1M / 25.5M / 56.8M (README table; 3-decimal values from the official code)."""
    with torch.device('meta'):
        model = timm.create_model(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == params


@pytest.mark.parametrize('name,gmacs', [('biformer_tiny', 2.2), ('biformer_small', 4.5), ('biformer_base', 9.8)])
def test_macs_match_paper(name, gmacs, monkeypatch):
    """Multiply-accumulates at 224² within 2% of the paper's "FLOPs" (2.2G / 4.5G / 9.8G, which count MACs).

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2): convolutions and matrix products. It does
    not see inside autograd Functions or the fused CPU attention kernel, so the count runs the routed attention on
    the gather reference (``VISIONZOO_BRA_BACKEND=reference``) and the last stage's attention on SDPA's math
    backend, which are plain matrix products. Softmax, norms and activations are not counted, as in the paper.
    """
    monkeypatch.setenv('VISIONZOO_BRA_BACKEND', 'reference')
    model = timm.create_model(name).eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 224, 224))
    macs = counter.get_total_flops() / 2e9
    assert abs(macs / gmacs - 1) < 0.02, f'{name}: {macs:.3f} GMACs vs {gmacs} in the paper'


# ------------------------------------------------------------------------------------------ official checkpoints
@pytest.mark.parametrize('name', NAMES)
def test_official_layout_is_ours(name):
    """Every official key with its shape, and nothing else (S and B built on the meta device)."""
    with torch.device('meta'):
        model = timm.create_model(name)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == official_layout(name)['keys']


@pytest.mark.parametrize('wrap,prefix', [('model', ''), ('state_dict', 'module.'), (None, '')])
def test_official_checkpoint_loads_strictly(tmp_path, wrap, prefix):
    keys = official_layout('biformer_tiny')['keys']
    sd = {prefix + k: v for k, v in synthetic_state_dict(keys).items()}
    filtered = checkpoint_filter_fn({wrap: sd} if wrap else sd, None)
    model = timm.create_model('biformer_tiny')
    model.load_state_dict(filtered, strict=True)
    path = tmp_path / 'ckpt.pth'
    torch.save({wrap: sd} if wrap else sd, path)
    loaded = create_timm_model('biformer_tiny', pretrained=str(path)).state_dict()
    for k, v in sd.items():
        assert torch.equal(loaded[k[len(prefix):]], v), k


# --------------------------------------------------------------------------------------- sizes and configuration
def test_any_input_size_and_per_stage_regions():
    """Odd sizes, maps smaller than n_win (stage 3 of a 64² input: 4 x 4 with 7 regions per side), and n_win /
    topk per stage."""
    model = timm.create_model('biformer_tiny', depths=(1, 1, 1, 1), num_classes=3, n_win=(8, 4, 2, 1),
                              topks=(2, 3, 4, -2)).eval()
    assert [s[0].attn.n_win for s in model.stages[:3]] == [8, 4, 2]
    assert [s[0].attn.topk for s in model.stages[:3]] == [2, 3, 4]
    default = timm.create_model('biformer_tiny', depths=(1, 1, 1, 1)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 100, 76)).shape == (1, 3)
        feats = default.forward_intermediates(torch.randn(1, 3, 64, 64), intermediates_only=True)
    assert [tuple(f.shape[2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]


@pytest.mark.parametrize('kwargs,pattern', [(dict(n_win=(7, 7)), 'n_win must be an int or a sequence of 4'),
                                            (dict(topks=(1, 4, 0, -2)), 'topk must be > 0'),
                                            (dict(global_pool='max'), "global_pool must be one of .*got 'max'")])
def test_bad_config_is_a_clear_error(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        BiFormer(**dict(TINY, **kwargs))


def test_mixed_precision_training_step():
    """bfloat16 autocast on CPU: the routed attention computes in float32 and returns bfloat16; finite gradients
    and logits close to float32."""
    model = tiny_model().train()
    img = torch.randn(2, 3, 40, 56)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = model(img)
    logits.float().logsumexp(-1).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        full = model(img)
    # max |bf16 - fp32| measured over 12 seeds of this setup: 0.016 (0.0048 for this one; logits up to ~1)
    torch.testing.assert_close(logits.float(), full, atol=0.04, rtol=0)


def test_dense_features_and_registry_backbone():
    """Strides 4/8/16/32 through timm's features_only and visionzoo's TimmBackbone (official dense settings:
    n_win 16 for detection, 8 for segmentation)."""
    img = torch.randn(1, 3, 96, 160)
    features = timm.create_model('biformer_tiny', depths=(1, 1, 1, 1), features_only=True, n_win=16)
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    assert features.feature_info.channels() == [64, 128, 256, 512]
    assert [tuple(f.shape) for f in features(img)] == [(1, 64, 24, 40), (1, 128, 12, 20), (1, 256, 6, 10),
                                                       (1, 512, 3, 5)]
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='biformer_tiny', depths=(1, 1, 1, 1), n_win=8,
                                 out_indices=(1, 2)))
    assert backbone.strides == [8, 16] and backbone.out_channels == [128, 256]
    assert len(backbone.body.model.stages) == 3  # pruned after the last wanted stage
    assert [tuple(f.shape) for f in backbone(img)] == [(1, 128, 12, 20), (1, 256, 6, 10)]


def test_fuse_keeps_outputs():
    import visionzoo
    model = tiny_model().eval()
    img = torch.randn(2, 3, 40, 56)
    fused = visionzoo.fuse(model)
    with torch.no_grad():
        expected = model(img)
        torch.testing.assert_close(fused(img), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


# ------------------------------------------------------------------------------------------------ timm contract
def test_registered_names_and_default_cfgs():
    assert set(timm.list_models('biformer_*')) == set(NAMES)
    for name in NAMES:
        cfg = timm.create_model(name, depths=(1, 1, 1, 1)).pretrained_cfg
        assert cfg['input_size'] == (3, 224, 224) and cfg['interpolation'] == 'bicubic'
        assert cfg['first_conv'] == 'downsample_layers.0.0' and cfg['classifier'] == 'head'
        assert cfg['notes'][0].startswith('https://api.onedrive.com/')
