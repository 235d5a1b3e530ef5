"""SLAB: official logits and layouts, PRepBN schedule, SLA against its plain formula, Swin windows and padding,
fusion, parameter counts, timm contract.

The official layouts and logits (tests/data/official_layouts/slab_*.json) were recorded from the official model code
(xinghaochen/SLAB, commit in each fixture's ``source``, built as its ``main.py`` builds the released configs) with
:func:`conftest.synthetic_state_dict` weights.
"""
import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import official_layout, synthetic_state_dict

import visionzoo
import visionzoo.backbones.slab  # noqa: F401  (registers slab_*)
from visionzoo.backbones import create_timm_model
from visionzoo.backbones.slab import (PRepBN, RepBN, SimplifiedLinearAttention, SlabSwinTransformer,
                                      checkpoint_filter_fn, simplified_linear_attention)
from visionzoo.registry import MODELS

NAMES = ('slab_deit_tiny', 'slab_deit_small', 'slab_pvt_tiny', 'slab_swin_tiny', 'slab_swin_small', 'slab_cswin_tiny')
# one tiny configuration per architecture: (name, kwargs, input size); the input sizes run padded windows and
# stripes, a shifted "L" and a shifted "S" Swin block, and resampled positional encodings
TINY = {
    'deit': ('slab_deit_tiny', dict(embed_dim=16, depth=2, num_heads=2, img_size=64), (64, 48)),
    'pvt': ('slab_pvt_tiny', dict(embed_dims=(8, 16, 16, 32), num_heads=(1, 2, 2, 4), depths=(1, 1, 1, 1),
                                  img_size=64), (64, 96)),
    'swin': ('slab_swin_tiny', dict(embed_dim=8, depths=(2, 1, 2, 1), num_heads=(2, 2, 2, 2), img_size=64),
             (164, 130)),
    'cswin': ('slab_cswin_tiny', dict(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(2, 2, 2, 2), img_size=64),
              (96, 160)),
}


def tiny(arch, **kwargs):
    name, config, size = TINY[arch]
    torch.manual_seed(0)
    return timm.create_model(name, **dict(config, **kwargs)), size


def randomize_bn_(model, seed=0):
    """Non-trivial RepBN statistics and affine parameters (the defaults make RepBN close to 2x)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RepBN):
                c = m.bn.num_features
                m.bn.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.bn.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
                m.bn.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.alpha.fill_(0.5 + torch.rand(1, generator=g).item())
            elif hasattr(m, 'positional_encoding'):
                m.positional_encoding.normal_(0, 0.1, generator=g)
    return model


def official_dropped(keys):
    return [k for k, _ in keys if k == 'cls_token' or k.endswith(('.relative_position_index', '.attn_mask')) or
            (k.endswith('.scale') and '.attns.' in k)]


# ------------------------------------------------------------------------------------------ official checkpoints
@pytest.mark.parametrize('name', ('slab_deit_tiny', 'slab_pvt_tiny', 'slab_swin_tiny', 'slab_cswin_tiny'))
def test_official_logits(name):
    """Each architecture with the official model's synthetic weights gives the official logits at 224²."""
    layout = official_layout(name)
    model = timm.create_model(name).eval()
    checkpoint = {'model': synthetic_state_dict(layout['keys'], layout['seed'])}
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model), strict=True)
    img = torch.randn(layout['input_shape'], generator=torch.Generator().manual_seed(layout['input_seed']))
    with torch.no_grad():
        logits = model(img)[0]
    official = torch.tensor(layout['logits'])
    err = ((logits - official).abs().max() / official.abs().max()).item()
    assert err < 1e-5, f'output differs from the official model by {err:.2e} (relative)'


@pytest.mark.parametrize('name', NAMES)
def test_official_layout_is_ours(name):
    """Every official key with its shape, except the unused parameters and the buffers recomputed here."""
    layout = official_layout(name)
    dropped = set(official_dropped(layout['keys']))
    with torch.device('meta'):
        model = timm.create_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: s for k, s in layout['keys'] if k not in dropped}
    # the filter removes exactly those (meta tensors: no memory for the full-size models)
    sd = {k: torch.empty(s, device='meta') for k, s in layout['keys']}
    assert set(checkpoint_filter_fn({'state_dict': sd}, model)) == set(ours)


@pytest.mark.parametrize('name,params', [('slab_deit_tiny', 6.20), ('slab_deit_small', 22.99),
                                         ('slab_pvt_tiny', 12.16), ('slab_swin_tiny', 29.22),
                                         ('slab_swin_small', 50.55), ('slab_cswin_tiny', 21.23)])
def test_param_counts(name, params):
    """With the 1000-class head, to 0.01M; equal to the official model's count less its unused parameters.

    PVT-T and CSWin-T are built as the official ``main.py`` builds the released configs (``PVT_LA_SR_RATIOS=1111``,
    ``CSWIN_LA_SPLIT_SIZE='56-28-14-7'``): 12.16M and 21.23M. The 13.35M / 20.47M of the reference notes are the
    official classes' constructor defaults (``la_sr_ratios='8421'``, ``la_split_size='1-2-7-7'``), which no
    config uses.
    """
    with torch.device('meta'):
        model = timm.create_model(name)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 2) == params
    layout = official_layout(name)
    unused = sum(math.prod(s) for k, s in layout['keys']
                 if k == 'cls_token' or (k.endswith('.scale') and '.attns.' in k))
    assert count == layout['num_params'] - unused


@pytest.mark.parametrize('wrap,prefix', [('model', ''), ('state_dict', 'module.'), (None, '')])
def test_official_checkpoint_loads_strictly(tmp_path, wrap, prefix):
    layout = official_layout('slab_deit_tiny')
    sd = {prefix + k: v for k, v in synthetic_state_dict(layout['keys']).items()}
    sd[prefix + 'blocks.3.norm1.iter'] = torch.tensor(1234)  # a PRepBN schedule in mid-course
    sd[prefix + 'blocks.3.norm1.total_step'] = torch.tensor(60000)
    path = tmp_path / 'slab_deit_tiny.pth'
    torch.save({wrap: sd, 'epoch': 299} if wrap else sd, path)
    model = create_timm_model('slab_deit_tiny', pretrained=str(path))
    loaded = model.state_dict()
    for k, v in sd.items():
        k = k[len(prefix):]
        if k != 'cls_token':
            assert torch.equal(loaded[k], v.to(loaded[k].dtype)), k
    assert model.blocks[3].norm1.ratio().item() == pytest.approx(1234 / 60000)


@pytest.mark.parametrize('arch', ['deit', 'pvt'])
def test_checkpoint_into_other_img_size_equals_runtime_resampling(arch):
    """A checkpoint laid out for another grid loads (positional encodings resampled by the filter) and gives what
    the original model computes on the fly at that size."""
    small, _ = tiny(arch)
    randomize_bn_(small).eval()
    size = (96, 64)
    other, _ = tiny(arch, img_size=size)
    other.load_state_dict(checkpoint_filter_fn(small.state_dict(), other), strict=True)
    img = torch.randn(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(img), small(img), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------ PRepBN
def test_prepbn_schedule_counters_and_eval():
    torch.manual_seed(0)
    norm = PRepBN(6, steps=10)
    x = torch.randn(4, 5, 6)
    assert norm.ratio().item() == 1.0  # step 0: all LayerNorm
    for _ in range(5):
        norm(x)
    assert norm.ratio().item() == pytest.approx(0.5) and norm.iter.item() == 5
    # mid-course: λ·LN + (1 − λ)·RepBN with the batch statistics
    ln = F.layer_norm(x, (6,), norm.norm1.weight, norm.norm1.bias, norm.norm1.eps)
    mean, var = x.mean(dim=(0, 1)), x.var(dim=(0, 1), unbiased=False)
    bn = (x - mean) / torch.sqrt(var + 1e-5) * norm.norm2.bn.weight + norm.norm2.bn.bias + norm.norm2.alpha * x
    torch.testing.assert_close(norm(x), 0.5 * ln + 0.5 * bn)
    for _ in range(10):
        norm(x)
    assert norm.ratio().item() == 0.0 and norm.iter.item() == 0  # stops at the end
    # counters travel with the state dict
    restored = PRepBN(6, steps=99)
    state = norm.state_dict()
    state['iter'] = torch.tensor(3)
    restored.load_state_dict(state)
    assert restored.ratio().item() == pytest.approx(0.3) and restored.total_step.item() == 10
    # eval: RepBN alone, with the running statistics, and no step
    norm.eval()
    bn = norm.norm2.bn
    expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias + norm.norm2.alpha * x
    torch.testing.assert_close(norm(x), expected)
    assert norm.iter.item() == 0


def test_prepbn_warmup_keeps_layernorm_and_the_counter():
    norm = PRepBN(3, steps=4, warmup=2)
    x = torch.randn(2, 7, 3)
    for _ in range(2):
        out = norm(x)
        torch.testing.assert_close(out, norm.norm1(x))
    assert norm.iter.item() == 4 and norm.warm.item() == 0
    norm(x)
    assert norm.iter.item() == 3


def test_grad_checkpointing_steps_the_schedule_once_and_keeps_gradients():
    """The recomputed forward reuses the forward's λ, does not step the counters and leaves the BN running
    statistics alone: gradients and state equal those of a run without checkpointing."""
    runs = []
    for checkpointing in (False, True):
        model, size = tiny('swin')
        randomize_bn_(model).train()
        for m in model.modules():
            if isinstance(m, PRepBN):
                m.iter.fill_(7)
                m.total_step.fill_(10)
        model.set_grad_checkpointing(checkpointing)
        img = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
        model(img).logsumexp(-1).sum().backward()
        runs.append((model.state_dict(), {n: p.grad for n, p in model.named_parameters()}))
    (plain_state, plain_grads), (ckpt_state, ckpt_grads) = runs
    assert ckpt_state['layers.0.blocks.1.norm1.iter'].item() == 6
    for k, v in plain_state.items():
        torch.testing.assert_close(ckpt_state[k], v, msg=lambda m, k=k: f'{k}: {m}')
    for k, g in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[k], g, atol=1e-6, rtol=1e-5, msg=lambda m, k=k: f'grad of {k}: {m}')


def test_bad_prepbn_steps_is_a_clear_error():
    with pytest.raises(ValueError, match='prepbn_steps'):
        timm.create_model('slab_deit_tiny', depth=1, prepbn_steps=0)


# --------------------------------------------------------------------------------------------------------- SLA
def plain_sla(q, k, v, pos, heads, grid, dwc_weight, dwc_bias):
    """ReLU(q)·(ReLU(k)ᵀv) / (ReLU(q)·ΣReLU(k)) + dwc(v) per head, the heads' v maps through one depthwise conv,
    written with explicit loops over batch and heads."""
    b, n, c = q.shape
    d = c // heads
    out = torch.empty(b, n, c, dtype=torch.float64)
    for i in range(b):
        for h in range(heads):
            s = slice(h * d, (h + 1) * d)
            qh = torch.relu(q[i, :, s].double())
            kh = torch.relu(k[i, :, s].double() + pos[0, :, s].double())
            vh = v[i, :, s].double()
            attn = (qh @ kh.T) / ((qh @ kh.sum(0)).unsqueeze(-1) + 1e-6)
            vmap = vh.T.reshape(1, d, *grid)
            conv = F.conv2d(vmap, dwc_weight.double(), dwc_bias.double(), padding=dwc_weight.shape[-1] // 2, groups=d)
            out[i, :, s] = attn @ vh + conv.reshape(d, n).T
    return out


def test_sla_equals_plain_formula_and_stays_fp32_under_autocast():
    torch.manual_seed(0)
    grid, heads, c = (5, 7), 3, 12
    q, k, v = (torch.randn(2, 35, c) for _ in range(3))
    pos = torch.randn(1, 35, c) * 0.3
    dwc = nn.Conv2d(4, 4, 5, padding=2, groups=4)
    expected = plain_sla(q, k, v, pos, heads, grid, dwc.weight, dwc.bias)
    out = simplified_linear_attention(q, k, v, pos, heads, grid, dwc)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = simplified_linear_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), pos, heads, grid, dwc)
    assert low.dtype == torch.float32
    # only the bf16 rounding of the inputs is left: the attention itself ran in float32
    ref = plain_sla(*(t.bfloat16().float() for t in (q, k, v)), pos, heads, grid, dwc.weight, dwc.bias)
    torch.testing.assert_close(low.double(), ref, atol=1e-5, rtol=1e-5)


def test_sla_module_under_autocast_projects_an_fp32_attention():
    torch.manual_seed(0)
    attn = SimplifiedLinearAttention(16, 2, (4, 4))
    seen = []
    attn.proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    x = torch.randn(2, 4, 4, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = attn(x)
    assert seen == [torch.bfloat16]  # cast back to the qkv dtype only for the projection
    # max |bf16 - fp32| measured over 12 seeds of this setup: 0.0063 (0.0036 for this one; outputs up to ~0.9)
    torch.testing.assert_close(out.float(), attn(x), atol=0.015, rtol=0)


# ------------------------------------------------------------------------------------------ Swin windows, padding
def test_swin_l_windows_clamp_and_padding_on_a_non_square_odd_input():
    model = SlabSwinTransformer(img_size=64, embed_dim=8, depths=(2, 1, 2, 1), num_heads=(2, 2, 2, 2),
                                num_classes=3).eval()
    randomize_bn_(model)
    l_block, s_block = model.layers[0].blocks[1], model.layers[2].blocks[1]
    assert l_block.attn.positional_encoding.shape == (1, 16 * 16, 8)  # 56 clamped to the stage map at img_size
    # at run time: clamped per axis, no shift when the map fits one window; shifted and padded otherwise
    assert l_block.window_and_shift(12, 19) == ((12, 16), 0)
    assert l_block.window_and_shift(41, 33) == ((16, 16), 8)
    assert s_block.window_and_shift(11, 9) == ((7, 7), 3)
    assert s_block.window_and_shift(5, 9) == ((5, 7), 0)
    img = torch.randn(1, 3, 75, 45)  # patches 19 x 12 (image padded to 76 x 48), then 10 x 6, 5 x 3, 3 x 2
    with torch.no_grad():
        feats = model.forward_intermediates(img, intermediates_only=True)
    assert [tuple(f.shape[-2:]) for f in feats] == [(19, 12), (10, 6), (5, 3), (3, 2)]

    # padded tokens are masked: the 3 real rows of the second 16 x 12 window attend among themselves only,
    # with the window's first 3 rows of positional encoding and zero padding around the depthwise conv
    attn = l_block.attn
    x = torch.randn(2, 19, 12, 8)
    with torch.no_grad():
        out = attn(x, (16, 12), 0)
        q, k, v = attn.qkv(x[:, 16:]).flatten(1, 2).chunk(3, dim=-1)
        pos = F.interpolate(attn.positional_encoding.view(1, 16, 16, 8).permute(0, 3, 1, 2), size=(16, 12),
                            mode='bicubic', align_corners=False).permute(0, 2, 3, 1)[:, :3].reshape(1, 36, 8)
        tail = simplified_linear_attention(q, k, v, pos, 2, (3, 12), attn.dwc)
        torch.testing.assert_close(out[:, 16:], attn.proj(tail).view(2, 3, 12, 8), atol=1e-5, rtol=1e-5)


def test_swin_s_window_padding_is_masked():
    """A padded "S" window attends among its real tokens only: the 2 x 7 real part of a bottom window of a 9 x 9
    map equals the block run on that part alone (a 2 x 7 window indexing the same relative position table)."""
    model = SlabSwinTransformer(img_size=64, embed_dim=8, depths=(1, 1, 2, 1), num_heads=(2, 2, 2, 2)).eval()
    attn = model.layers[2].blocks[1].attn
    with torch.no_grad():
        attn.relative_position_bias_table.normal_(0, 1)
        x = torch.randn(2, 9, 9, 32)
        out = attn(x, (7, 7), 0)
        torch.testing.assert_close(out[:, 7:, :7], attn(x[:, 7:, :7], (2, 7), 0), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[:, :7, :7], attn(x[:, :7, :7], (7, 7), 0), atol=1e-5, rtol=1e-5)
        shifted = attn(x, (7, 7), 3)
    assert shifted.shape == x.shape and not torch.allclose(shifted, out)


# ------------------------------------------------------------------------------------------------------- fusion
@pytest.mark.parametrize('arch', list(TINY))
def test_fuse_matches_and_removes_every_norm(arch):
    model, size = tiny(arch, num_classes=7)
    randomize_bn_(model)
    img = torch.randn(2, 3, *size)
    model.train()
    with torch.no_grad():
        for _ in range(2):  # running statistics from real batches as well
            model(img)
    model.eval()
    fused = visionzoo.fuse(model)
    assert not any(isinstance(m, (PRepBN, RepBN, nn.BatchNorm1d, nn.LayerNorm)) for m in fused.modules())
    with torch.no_grad():
        expected = model(img)
        torch.testing.assert_close(fused(img), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
        feats = model.forward_intermediates(img, intermediates_only=True)
        fused_feats = fused.forward_intermediates(img, intermediates_only=True)
    for f, g in zip(feats, fused_feats):
        torch.testing.assert_close(g, f, rtol=1e-5, atol=1e-5 * f.abs().max().item())


def test_fuse_folds_norms_into_linears_and_convs():
    model, _ = tiny('swin')
    fused = visionzoo.fuse(randomize_bn_(model))
    block = fused.layers[0].blocks[0]
    assert isinstance(block.norm1, nn.Identity) and isinstance(block.norm2, nn.Identity)
    assert isinstance(fused.patch_embed.norm, nn.Identity)
    assert isinstance(fused.layers[0].downsample.norm, nn.Identity)
    assert fused.layers[0].downsample.reduction.bias is not None
    assert type(fused.norm).__name__ == 'ChannelAffine'  # also feeds forward_features: kept as an affine
    assert model.layers[0].blocks[0].norm1 is not None and isinstance(model.norm, PRepBN)  # the original is intact


# ------------------------------------------------------------------------------------------------ timm contract
def test_registered_names_and_default_cfgs():
    assert set(timm.list_models('slab*')) == set(NAMES)
    for name in NAMES:
        with torch.device('meta'):
            cfg = timm.create_model(name).pretrained_cfg
        assert cfg['url'] == f'https://github.com/xinghaochen/SLAB/releases/download/ckpts/{name}.pth'
        assert cfg['input_size'] == (3, 224, 224) and cfg['crop_pct'] == 0.875 and cfg['interpolation'] == 'bicubic'


def test_registry_backbone_on_hierarchical_slab():
    name, config, size = TINY['cswin']
    backbone = MODELS.build(dict(type='TimmBackbone', model_name=name, out_indices=(1, 2, 3), norm_eval=True,
                                 **config))
    assert backbone.strides == [8, 16, 32] and backbone.out_channels == [16, 32, 64]
    backbone.train()
    feats = backbone(torch.randn(1, 3, *size))
    assert [tuple(f.shape) for f in feats] == [(1, 16, 12, 20), (1, 32, 6, 10), (1, 64, 3, 5)]


@pytest.mark.parametrize('arch,size,pattern', [('deit', (64, 40), 'multiples of 16'),
                                               ('pvt', (64, 80), 'multiples of 32')])
def test_bad_input_size_is_a_clear_error(arch, size, pattern):
    model, _ = tiny(arch)
    with pytest.raises(ValueError, match=pattern) as e:
        model(torch.randn(1, 3, *size))
    assert f'{size[0]}x{size[1]}' in str(e.value)
