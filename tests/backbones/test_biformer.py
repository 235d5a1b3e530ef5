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
from visionzoo.backbones.biformer import BiFormer, BiLevelRoutingAttention, checkpoint_filter_fn
from visionzoo.registry import MODELS
from visionzoo.utils.errors import CheckpointError

NAMES = ('biformer_tiny', 'biformer_small', 'biformer_base')
# 3 x 3 regions: topk 1 and 2 run the op's chunked formulation on CPU, topk 4 its dense masked one
TINY = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 32), head_dim=8, n_win=3, topks=(1, 2, 4, -2))


# ------------------------------------------------------------------------------ plain composition (the reference)
def plain_bra(attn, x):
    """The official ``BiLevelRoutingAttention.forward`` (ops/bra_legacy.py, auto_pad) written plainly on NHWC x:
    pad, project, regions, routing on region means, ``torch.gather`` of the routed regions from an expanded view,
    attention with the full-qk-width scale, LePE on v, output projection, crop."""
    n, height, width, c = x.shape
    s, heads, qk = attn.n_win, attn.num_heads, attn.qk_dim
    x = F.pad(x, (0, 0, 0, -width % s, 0, -height % s))
    hp, wp = x.shape[1:3]
    rh, rw = hp // s, wp // s
    q, kv = F.linear(x, attn.qkv.qkv.weight, attn.qkv.qkv.bias).split([qk, qk + c], dim=-1)

    def regions(t):  # 'n (j h) (i w) c -> n (j i) (h w) c'
        return t.view(n, s, rh, s, rw, -1).permute(0, 1, 3, 2, 4, 5).reshape(n, s * s, rh * rw, -1)
    q_pix, kv_pix = regions(q), regions(kv)
    q_win, k_win = q_pix.mean(2).detach(), kv_pix[..., :qk].mean(2).detach()
    r_idx = torch.topk((q_win * attn.scale) @ k_win.transpose(-1, -2), attn.topk, dim=-1).indices
    topk = attn.topk
    sel = torch.gather(kv_pix.view(n, 1, s * s, rh * rw, -1).expand(-1, s * s, -1, -1, -1), 2,
                       r_idx.view(n, s * s, topk, 1, 1).expand(-1, -1, -1, rh * rw, qk + c))
    k_sel, v_sel = sel.split([qk, c], dim=-1)
    k_sel = k_sel.reshape(n * s * s, topk * rh * rw, heads, -1).permute(0, 2, 3, 1)
    v_sel = v_sel.reshape(n * s * s, topk * rh * rw, heads, -1).transpose(1, 2)
    q_pix = q_pix.reshape(n * s * s, rh * rw, heads, -1).transpose(1, 2)
    out = torch.softmax((q_pix * attn.scale) @ k_sel, dim=-1) @ v_sel  # (n p2, heads, w2, c / heads)
    out = out.transpose(1, 2).reshape(n, s, s, rh, rw, c).permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, c)
    lepe = F.conv2d(kv[..., qk:].permute(0, 3, 1, 2), attn.lepe.weight, attn.lepe.bias, padding=attn.lepe.padding,
                    groups=c).permute(0, 2, 3, 1)
    return F.linear(out + lepe, attn.wo.weight, attn.wo.bias)[:, :height, :width]


def plain_attention_lepe(attn, x):
    """The official ``AttentionLePE`` (models/_common.py): 8-head attention, LePE on the input, ``proj``."""
    n, height, width, c = x.shape
    t = x.reshape(n, height * width, c)
    q, k, v = (t @ attn.qkv.weight.t()).reshape(n, -1, 3, 8, c // 8).permute(2, 0, 3, 1, 4)
    out = (torch.softmax((q @ k.transpose(-1, -2)) * (c // 8) ** -0.5, dim=-1) @ v).transpose(1, 2).reshape(n, -1, c)
    lepe = F.conv2d(x.permute(0, 3, 1, 2), attn.lepe.weight, attn.lepe.bias, padding=2, groups=c)
    out = out + lepe.flatten(2).transpose(1, 2)
    return F.linear(out, attn.proj.weight, attn.proj.bias).reshape(n, height, width, c)


def plain_biformer(model, img):
    """The official ``BiFormer.forward`` (NCHW stages, blocks permuting to NHWC, BN + mean + head)."""
    x = img
    for down, stage in zip(model.downsample_layers, model.stages):
        x = down(x)
        for blk in stage:
            x = x + F.conv2d(x, blk.pos_embed.weight, blk.pos_embed.bias, padding=1, groups=x.shape[1])
            x = x.permute(0, 2, 3, 1)
            y = blk.norm1(x)
            attn = plain_bra(blk.attn, y) if isinstance(blk.attn, BiLevelRoutingAttention) else \
                plain_attention_lepe(blk.attn, y)
            x = x + attn
            x = x + blk.mlp[3](F.gelu(blk.mlp[0](blk.norm2(x))))
            x = x.permute(0, 3, 1, 2)
    x = model.norm(x)
    return model.head(x.flatten(2).mean(-1))


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
        torch.testing.assert_close(model(img), plain_biformer(model, img), atol=2e-5, rtol=1e-4)


def test_model_gradients_match_plain_official_composition():
    """Training step (BatchNorm in train mode): every parameter gradient equals autograd through the official
    formulation (gather backward)."""
    model = tiny_model().train()
    img = torch.randn(2, 3, 40, 56)
    loss = model(img).logsumexp(-1).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = torch.autograd.grad(plain_biformer(model, img).logsumexp(-1).sum(), list(model.parameters()))
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


def test_official_checkpoint_missing_key_is_an_error(tmp_path):
    sd = synthetic_state_dict(official_layout('biformer_tiny')['keys'])
    del sd['stages.2.5.attn.qkv.qkv.bias']
    path = tmp_path / 'broken.pth'
    torch.save({'model': sd}, path)
    with pytest.raises(CheckpointError, match=r'stages\.2\.5\.attn\.qkv\.qkv\.bias'):
        create_timm_model('biformer_tiny', pretrained=str(path), num_classes=0)


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
        torch.testing.assert_close(logits.float(), model(img), atol=0.1, rtol=0.1)


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
    if not hasattr(visionzoo, 'fuse'):
        pytest.skip('visionzoo.fuse is not there yet')
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


def test_timm_contract():
    model = timm.create_model('biformer_tiny', depths=(1, 1, 2, 1), embed_dims=(16, 32, 32, 32), head_dim=8)
    img = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(img)
        assert feats.shape == (2, 32, 2, 2)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        logits = model(img)
        assert logits.shape == (2, 1000)
        final, inter = model.forward_intermediates(img, indices=[0, 3])
        torch.testing.assert_close(final, feats)
        assert [t.shape for t in inter] == [(2, 16, 16, 16), (2, 32, 2, 2)]

    model.train()
    model.set_grad_checkpointing(True)
    with torch.no_grad():  # BatchNorm in train mode: batch statistics, so compare against a train-mode pass
        expected = model(img)
    out = model(img)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f'no gradient for {missing}'

    model.reset_classifier(0)
    assert model(img).shape == (2, 32)
    model.reset_classifier(0, '')
    assert model(img).shape == (2, 32, 2, 2)
    model.reset_classifier(5, 'avg')
    assert model(img).shape == (2, 5)
