"""Vision Mamba: mixer and model against plain compositions, official checkpoints, input sizes, timm contract."""
import argparse
import math
import os
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from _helpers import assert_missing_key_is_reported

import visionzoo  # noqa: F401  (registers vim_*)
from visionzoo.backbones.vim import VimMixer, VisionMamba, checkpoint_filter_fn
from visionzoo.registry import MODELS
from visionzoo.utils.errors import ArgumentError

VIM_MODELS = ('vim_tiny', 'vim_small', 'vim_base', 'vim_tiny_stride8', 'vim_small_stride8')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------------------ plain compositions (the references)
def rms_norm(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def plain_mixer(mixer, hidden, scan):
    """Official bimamba-v2 forward, written plainly: the backward direction on flipped copies, a padded Conv1d
    truncated to the sequence, and ``scan`` (mamba-ssm's sequential ``selective_scan_ref``)."""
    seqlen = hidden.shape[1]
    xz = (hidden @ mixer.in_proj.weight.t()).transpose(1, 2)

    def direction(xz, conv, x_proj, dt_proj, a_log, d):
        x, z = xz.chunk(2, dim=1)
        x = F.conv1d(x, conv.weight, conv.bias, padding=conv.weight.shape[-1] - 1, groups=x.shape[1])[..., :seqlen]
        x = F.silu(x)
        dt, b, c = (x.transpose(1, 2) @ x_proj.weight.t()).split([mixer.dt_rank, mixer.d_state, mixer.d_state], -1)
        delta = (dt @ dt_proj.weight.t()).transpose(1, 2)
        return scan(x, delta, -torch.exp(a_log.float()), b.transpose(1, 2), c.transpose(1, 2), d.float(), z=z,
                    delta_bias=dt_proj.bias.float(), delta_softplus=True)

    y = direction(xz, mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
    y_b = direction(xz.flip(-1), mixer.conv1d_b, mixer.x_proj_b, mixer.dt_proj_b, mixer.A_b_log, mixer.D_b)
    return ((y + y_b.flip(-1)) / 2).transpose(1, 2) @ mixer.out_proj.weight.t()


def plain_vim(model, img, scan):
    """The official VisionMamba forward (middle class token, add -> norm -> mixer, final add & norm, head)."""
    stride = model.patch_embed.stride
    x = F.conv2d(img, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=stride)
    x = x.flatten(2).transpose(1, 2)
    m = x.shape[1]
    x = torch.cat((x[:, :m // 2], model.cls_token.expand(x.shape[0], -1, -1), x[:, m // 2:]), dim=1) + model.pos_embed
    hidden, residual = x, None
    for layer in model.layers:
        residual = hidden if residual is None else residual + hidden
        hidden = plain_mixer(layer.mixer, rms_norm(residual, layer.norm.weight), scan)
    out = rms_norm(residual + hidden, model.norm_f.weight)
    return out[:, m // 2] @ model.head.weight.t() + model.head.bias


def randomize_(model, seed=0):
    """Non-trivial values everywhere (the default init zeroes biases and keeps A, D structured)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            p.add_(noise if not name.endswith(('A_log', 'A_b_log')) else noise.abs())
    return model


# ------------------------------------------------------------------------------------------------- equivalence
def test_mixer_matches_plain_composition(mamba_ref):
    torch.manual_seed(0)
    mixer = randomize_(VimMixer(16, d_state=4))
    hidden = torch.randn(2, 13, 16, requires_grad=True)
    out = mixer(hidden)
    expected = plain_mixer(mixer, hidden, mamba_ref)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)
    upstream = torch.randn_like(out)
    params = [hidden] + list(mixer.parameters())
    grads = torch.autograd.grad(out, params, upstream)
    expected_grads = torch.autograd.grad(expected, params, upstream)
    names = ['input'] + [n for n, _ in mixer.named_parameters()]
    for name, g, ge in zip(names, grads, expected_grads):
        torch.testing.assert_close(g, ge, atol=1e-4, rtol=1e-3, msg=lambda m, n=name: f'grad of {n}: {m}')


@pytest.mark.parametrize('patch,stride,size', [(8, 8, (32, 40)), (8, 4, (24, 20))])
def test_model_matches_plain_forward(mamba_ref, patch, stride, size):
    torch.manual_seed(0)
    model = VisionMamba(img_size=size, patch_size=patch, stride=stride, embed_dim=16, depth=3, d_state=4,
                        num_classes=5)
    randomize_(model).eval()
    img = torch.randn(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(model(img), plain_vim(model, img, mamba_ref), atol=5e-5, rtol=1e-4)


def test_drop_path_schedule_is_official():
    model = VisionMamba(embed_dim=16, depth=4, drop_path_rate=0.3, img_size=32)
    rates = [layer.drop_path.drop_prob if hasattr(layer.drop_path, 'drop_prob') else 0. for layer in model.layers]
    assert rates == pytest.approx([0., 0., 0.1, 0.2])  # [0] + linspace(0, rate, depth), first `depth` entries
    assert model.drop_path.drop_prob == pytest.approx(0.3)  # final residual add gets the full rate


@pytest.mark.parametrize('name,expected', [('vim_tiny', 7.148), ('vim_small', 25.797), ('vim_base', 97.598)])
def test_param_counts_match_paper(name, expected):
    model = timm.create_model(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == expected


# ------------------------------------------------------------------------------------------ official checkpoints
def official_state_dict(embed=192, depth=24, d_state=16, grid=14, num_classes=1000, seed=0):
    """A state dict with the official Vim key names and shapes (hustvl/Vim, models_mamba.py + mamba_simple.py,
    recorded from Vim-Ti: e.g. ``layers.0.mixer.x_proj.weight`` (44, 384)), plus the RoPE buffers the official
    models register when built with RoPE."""
    d_inner, rank = 2 * embed, math.ceil(embed / 16)
    shapes = {'cls_token': (1, 1, embed), 'pos_embed': (1, grid * grid + 1, embed),
              'patch_embed.proj.weight': (embed, 3, 16, 16), 'patch_embed.proj.bias': (embed,)}
    for i in range(depth):
        p = f'layers.{i}.mixer.'
        shapes.update({p + 'A_log': (d_inner, d_state), p + 'A_b_log': (d_inner, d_state), p + 'D': (d_inner,),
                       p + 'D_b': (d_inner,), p + 'in_proj.weight': (2 * d_inner, embed),
                       p + 'out_proj.weight': (embed, d_inner), f'layers.{i}.norm.weight': (embed,)})
        for s in ('', '_b'):
            shapes.update({p + f'conv1d{s}.weight': (d_inner, 1, 4), p + f'conv1d{s}.bias': (d_inner,),
                           p + f'x_proj{s}.weight': (rank + 2 * d_state, d_inner),
                           p + f'dt_proj{s}.weight': (d_inner, rank), p + f'dt_proj{s}.bias': (d_inner,)})
    shapes.update({'norm_f.weight': (embed,), 'head.weight': (num_classes, embed), 'head.bias': (num_classes,),
                   'rope.freqs_cos': (grid * grid, embed // 2), 'rope.freqs_sin': (grid * grid, embed // 2)})
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in shapes.items()}


@pytest.fixture(scope='module')
def official_ckpt(tmp_path_factory):
    """An official-style training checkpoint: ``model`` plus optimizer state, epoch and argparse args."""
    sd = official_state_dict()
    path = tmp_path_factory.mktemp('vim') / 'vim_t_midclstok_76p1acc.pth'
    torch.save({'model': sd, 'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-6}]}, 'epoch': 299,
                'args': argparse.Namespace(model='vim_tiny_patch16_224_bimambav2', drop_path=0.0)}, path)
    return str(path), sd


def test_official_checkpoint_loads_strictly(official_ckpt):
    path, sd = official_ckpt
    model = timm.create_model('vim_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path))
    loaded = model.state_dict()
    assert set(loaded) == set(sd) - {'rope.freqs_cos', 'rope.freqs_sin'}
    for k, v in loaded.items():
        assert torch.equal(v, sd[k]), k


def test_official_checkpoint_missing_key_is_an_error(tmp_path):
    assert_missing_key_is_reported(
        tmp_path, lambda path: timm.create_model('vim_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path)),
        official_state_dict(), 'layers.3.mixer.dt_proj_b.bias')


def test_official_checkpoint_into_registry_backbone_and_classifier(official_ckpt):
    path, sd = official_ckpt
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='vim_tiny', class_token=False, pretrained=path,
                                 out_indices=(11,)))
    inner = backbone.body.model
    assert len(inner.layers) == 12  # pruned after the last wanted block
    assert torch.equal(inner.layers[11].mixer.in_proj.weight, sd['layers.11.mixer.in_proj.weight'])
    classifier = MODELS.build(dict(type='ImageClassifier', backbone=dict(model_name='vim_tiny', pretrained=path),
                                   head=dict(type='LinearClsHead', num_classes=3)))
    assert torch.equal(classifier.backbone.pos_embed, sd['pos_embed'])
    assert torch.equal(classifier.backbone.norm_f.weight, sd['norm_f.weight'])


def test_checkpoint_into_other_resolution_keeps_middle_class_embedding(official_ckpt):
    path, sd = official_ckpt
    model = timm.create_model('vim_tiny', pretrained=True, img_size=(256, 192), num_classes=10,
                              pretrained_cfg_overlay=dict(file=path))
    assert model.pos_embed.shape == (1, 16 * 12 + 1, 192)
    assert torch.equal(model.pos_embed[0, 16 * 12 // 2], sd['pos_embed'][0, 14 * 14 // 2])
    assert model.head.weight.shape == (10, 192)  # timm re-initialises a classifier of another size
    assert torch.equal(model.layers[5].mixer.A_b_log, sd['layers.5.mixer.A_b_log'])


def test_checkpoint_into_dense_model_drops_class_token(official_ckpt):
    path, sd = official_ckpt
    model = timm.create_model('vim_tiny', pretrained=True, class_token=False, pretrained_cfg_overlay=dict(file=path))
    pos = sd['pos_embed']
    assert model.cls_token is None
    assert torch.equal(model.pos_embed, torch.cat((pos[:, :98], pos[:, 99:]), dim=1))


def test_runtime_resampling_equals_a_model_built_for_that_size():
    torch.manual_seed(0)
    small = VisionMamba(img_size=64, embed_dim=16, depth=2, d_state=4, num_classes=3).eval()
    randomize_(small)
    other = VisionMamba(img_size=(96, 48), embed_dim=16, depth=2, d_state=4, num_classes=3).eval()
    other.load_state_dict(checkpoint_filter_fn(small.state_dict(), other))
    img = torch.randn(1, 3, 96, 48)
    with torch.no_grad():
        torch.testing.assert_close(small(img), other(img))
        same = VisionMamba(img_size=64, embed_dim=16, depth=2, d_state=4, num_classes=3).eval()
        same.load_state_dict(checkpoint_filter_fn(small.state_dict(), same))
        assert torch.equal(same.pos_embed, small.pos_embed)  # same grid: no resampling at all


# --------------------------------------------------------------------------------------------------- input sizes
def test_non_square_inputs():
    model = timm.create_model('vim_tiny', depth=2, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 160, 96)).shape == (1, 7)
        assert model.forward_features(torch.randn(1, 3, 160, 96)).shape == (1, 10 * 6 + 1, 192)
    stride8 = timm.create_model('vim_tiny_stride8', depth=2).eval()
    with torch.no_grad():
        assert stride8.forward_features(torch.randn(1, 3, 64, 40)).shape == (1, 7 * 4 + 1, 192)


@pytest.mark.parametrize('name,size,pattern', [('vim_tiny', (230, 224), 'multiples of 16'),
                                               ('vim_tiny', (8, 224), 'at least 16'),
                                               ('vim_tiny_stride8', (228, 224), 'multiples of 8')])
def test_bad_input_size_is_a_clear_error(name, size, pattern):
    model = timm.create_model(name, depth=1)
    with pytest.raises(ValueError, match=pattern) as e:
        model(torch.randn(1, 3, *size))
    assert f'{size[0]}x{size[1]}' in str(e.value)


def test_mixed_precision_keeps_fp32_residual_and_finite_grads():
    torch.manual_seed(0)
    model = timm.create_model('vim_tiny', depth=2, num_classes=4)
    img = torch.randn(2, 3, 64, 64)
    residual_dtypes = []
    model.layers[1].register_forward_hook(lambda m, i, o: residual_dtypes.append(o[1].dtype))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = model(img)
    logits.float().logsumexp(-1).sum().backward()
    assert residual_dtypes == [torch.float32]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        full = model(img)
    # max |bf16 - fp32| measured over 12 seeds of this setup: 0.0042 (0.0029 for this one; logits up to ~0.6)
    torch.testing.assert_close(logits.float(), full, atol=0.01, rtol=0)


# ------------------------------------------------------------------------------------------------ timm contract
def test_registered_names_and_default_cfgs():
    assert set(timm.list_models('vim_*')) == set(VIM_MODELS)
    for name in VIM_MODELS:
        cfg = timm.create_model(name, depth=1).pretrained_cfg
        assert cfg['hf_hub_id'].startswith('hustvl/Vim-') and cfg['hf_hub_filename'].endswith('.pth')
        assert cfg['input_size'] == (3, 224, 224) and cfg['interpolation'] == 'bicubic'
        assert cfg['first_conv'] == 'patch_embed.proj' and cfg['classifier'] == 'head'


TRITON_CHECK = '''
import os, torch
from visionzoo.backbones.vim import VisionMamba
torch.manual_seed(0)
model = VisionMamba(img_size=32, patch_size=16, embed_dim=8, depth=2, d_state=4, num_classes=3)
img = torch.randn(2, 3, 32, 48)
results = {}
for backend in ('triton', 'torch'):
    os.environ['VISIONZOO_SCAN_BACKEND'] = backend
    model.zero_grad()
    out = model(img)
    out.square().sum().backward()
    results[backend] = [out.detach()] + [p.grad.clone() for p in model.parameters()]
names = ['logits'] + [n for n, _ in model.named_parameters()]
for name, a, b in zip(names, results['triton'], results['torch']):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: n + ': ' + m)
print('ok', len(names))
'''


def test_triton_scan_path_in_interpreter_matches_torch_path():
    """The model on the Triton kernels (run by Triton's CPU interpreter) equals the PyTorch path, with gradients."""
    pytest.importorskip('triton', reason='triton is not installed')
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, '-c', TRITON_CHECK], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[:1] == ['ok']


def test_dense_features_mixer_returns_the_block_outputs_alone():
    """dense_features='mixer' (VisionMambaSeg's use_residual_as_feature=False): the mixer output of each chosen block,
    not the residual stream; a plain loop over the blocks is the reference."""
    torch.manual_seed(0)
    kw = dict(depth=4, img_size=64, class_token=False, pretrained=False)
    mixer = timm.create_model('vim_tiny', dense_features='mixer', **kw).eval()
    residual = timm.create_model('vim_tiny', **kw).eval()
    residual.load_state_dict(mixer.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got = mixer.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        stream = residual.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        hidden, _ = mixer._embed(x)
        res, outs = None, []
        for layer in mixer.layers:
            hidden, res = mixer._run_layer(layer, hidden, res)
            outs.append((hidden, res))
    for feat, full, i in zip(got, stream, (1, 3)):
        h, r = outs[i]
        torch.testing.assert_close(feat, h.transpose(1, 2).reshape(feat.shape))
        torch.testing.assert_close(full, (h + r).transpose(1, 2).reshape(full.shape))
    with pytest.raises(ArgumentError, match=r"dense_features='stream'\): expected 'residual' or 'mixer'"):
        timm.create_model('vim_tiny', dense_features='stream', **kw)
