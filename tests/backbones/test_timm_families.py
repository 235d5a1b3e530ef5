"""timm's EfficientViT-M, SHViT and MambaOut in visionzoo: official checkpoints, fusion, dense backbone options.

The official layouts and logits were recorded from the official model code (microsoft/Cream, ysj9909/SHViT,
yuweihao/MambaOut; commits in each fixture's ``source``) with :func:`conftest.synthetic_state_dict` weights.
"""
import pytest
import timm
import torch
from conftest import official_layout, synthetic_state_dict

import visionzoo
from visionzoo.backbones import create_timm_model
from visionzoo.registry import MODELS
from visionzoo.utils.errors import ArgumentError, CheckpointError

LAYOUTS = ('efficientvit_m0', 'efficientvit_m5', 'shvit_s1', 'shvit_s4', 'mambaout_femto')
WITH_LOGITS = ('efficientvit_m0', 'shvit_s1', 'mambaout_femto')


def _official_checkpoint(tmp_path, name, wrap='model', prefix=''):
    layout = official_layout(name)
    state_dict = {prefix + k: v for k, v in synthetic_state_dict(layout['keys']).items()}
    if name.startswith('efficientvit'):  # official checkpoints carry the bias index buffers
        state_dict.update({prefix + k: torch.zeros(s, dtype=torch.long) for k, s in layout['keys']
                           if k.endswith('attention_bias_idxs')})
    path = tmp_path / f'{name}.pth'
    torch.save({wrap: state_dict} if wrap else state_dict, path)
    return path, layout


def _fingerprint(t):
    flat = t.flatten().double()
    return tuple(t.shape), flat.sum().item(), flat[0].item(), flat[-1].item()


def _seeded_input(layout):
    return torch.randn(layout['input_shape'], generator=torch.Generator().manual_seed(layout['input_seed']))


@pytest.mark.parametrize('name', LAYOUTS)
def test_official_checkpoint_loads_strictly_through_timm(tmp_path, name):
    path, layout = _official_checkpoint(tmp_path, name, wrap=None if name.startswith('mambaout') else 'model')
    # timm's loader is strict for a full model: every key must map
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    # every official tensor arrives, unchanged, exactly once (values are distinct random draws)
    expected = synthetic_state_dict(layout['keys']).values()
    loaded = [v for v in model.state_dict().values() if v.is_floating_point()]
    assert sorted(map(_fingerprint, loaded)) == sorted(map(_fingerprint, expected))
    if name in WITH_LOGITS:
        with torch.no_grad():
            logits = model(_seeded_input(layout))
        official = torch.tensor(layout['logits'])
        err = ((logits[0] - official).abs().max() / official.abs().max()).item()
        assert err < 1e-5, f'{name}: output differs from the official model by {err:.2e} (relative)'


@pytest.mark.parametrize('name', ('efficientvit_m0', 'shvit_s1'))
def test_official_checkpoint_wrapped_and_prefixed_into_registry_backbone(tmp_path, name):
    path, _ = _official_checkpoint(tmp_path, name, wrap='state_dict', prefix='module.')
    backbone = MODELS.build(dict(type='TimmBackbone', model_name=name, pretrained=str(path), out_indices=(1, 2)))
    reference = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    backbone.eval()
    img = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = reference.forward_intermediates(img, indices=(1, 2), intermediates_only=True)
        feats = backbone(img)
    for got, want in zip(feats, expected):
        torch.testing.assert_close(got, want)


def test_timm_layout_still_passes_through(tmp_path):
    for name in ('efficientvit_m0', 'shvit_s1'):
        source = timm.create_model(name)
        path = tmp_path / f'{name}_timm.pth'
        torch.save(source.state_dict(), path)
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        for (k, a), b in zip(source.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), k


def test_official_checkpoint_with_a_missing_key_is_a_clear_error(tmp_path):
    layout = official_layout('efficientvit_m0')
    state_dict = synthetic_state_dict(layout['keys'])
    state_dict.pop('blocks2.3.mixer.m.attn.qkvs.0.c.weight')
    path = tmp_path / 'broken.pth'
    torch.save({'model': state_dict}, path)
    with pytest.raises(CheckpointError, match=r'broken\.pth does not (load into|match) efficientvit_m0.*'
                                              r'stages\.1\.blocks\.0\.mixer\.m\.attn\.qkvs\.0\.conv\.weight'):
        create_timm_model('efficientvit_m0', pretrained=str(path), num_classes=0)


def test_detection_m0_variant_has_its_own_query_kernels():
    """The official detection M0 uses query kernels (7, 5, 3, 3); the classification M0 uses (5, 5, 5, 5)."""
    from mmengine.config import Config
    from conftest import ROOT
    cfg = Config.fromfile(f'{ROOT}/configs/_base_/models/efficientvit-m0-det_backbone.py')
    backbone = MODELS.build(cfg.backbone)
    stage = backbone.body.stages_0.blocks[0].mixer.m.attn
    assert [tuple(dw.conv.kernel_size) for dw in stage.dws] == [(7, 7), (5, 5), (3, 3), (3, 3)]
    assert backbone.strides == [16, 32, 64] and backbone.out_channels == [64, 128, 192]
    backbone.train()
    assert not any(m.training for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


# ----------------------------------------------------------------------------------------------------- fusion
def _with_running_statistics(model):
    """Non-trivial BatchNorm statistics and affine terms, and attention biases, so that folding is exercised."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
            if hasattr(m, 'attention_biases'):
                m.attention_biases.copy_(0.1 * torch.randn(m.attention_biases.shape, generator=g))
    return model.eval()


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize('name,size', [('efficientvit_m0', 128), ('shvit_s1', 128), ('mambaout_femto', 64)])
def test_fuse_keeps_outputs_and_removes_batchnorm(name, size):
    model = _with_running_statistics(timm.create_model(name))
    img = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(img)
        fused = visionzoo.fuse(model)
        out = fused(img)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    bn = torch.nn.modules.batchnorm._BatchNorm
    assert _count(fused, bn) == 0
    assert model.training is False and _count(model, bn) == _count(timm.create_model(name), bn)  # not in place
    if name.startswith('efficientvit'):
        # each residual depthwise conv became one conv
        assert _count(fused, timm.models.efficientvit_msra.ResidualDrop) < _count(model,
                                                                                timm.models.efficientvit_msra.ResidualDrop)


def test_fuse_folds_generic_sequential_pairs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 8, 1, groups=2), torch.nn.Flatten(),
        torch.nn.Linear(8 * 25, 6), torch.nn.BatchNorm1d(6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    _with_running_statistics(model)
    img = torch.randn(4, 3, 5, 5)
    fused = visionzoo.fuse(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(img), model(img), rtol=1e-5, atol=1e-6)
    assert _count(fused, torch.nn.modules.batchnorm._BatchNorm) == 0


def test_fuse_leaves_padded_conv_after_batchnorm_alone():
    """A BatchNorm before a padded conv cannot fold (the border would see the shift); it stays."""
    model = _with_running_statistics(torch.nn.Sequential(torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 4, 3, padding=1)))
    fused = visionzoo.fuse(model)
    assert _count(fused, torch.nn.BatchNorm2d) == 1
    img = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(fused(img), model(img))
    with pytest.raises(TypeError, match='torch.nn.Module'):
        visionzoo.fuse('model')


# ------------------------------------------------------------------------------------------- dense backbone
@pytest.mark.parametrize('name,strides,channels', [
    ('efficientvit_m0', [16, 32, 64], [64, 128, 192]),
    ('shvit_s1', [16, 32, 64], [128, 224, 320]),
    ('mambaout_femto', [4, 8, 16, 32], [48, 96, 192, 288]),
])
def test_dense_backbone_strides_and_channels(name, strides, channels):
    backbone = MODELS.build(dict(type='TimmBackbone', model_name=name))
    assert backbone.strides == strides and backbone.out_channels == channels
    img = torch.randn(1, 3, 128, 192)
    feats = backbone(img)
    assert [tuple(f.shape) for f in feats] == [(1, c, -(-128 // s), -(-192 // s)) for c, s in zip(channels, strides)]
    last = MODELS.build(dict(type='TimmBackbone', model_name=name, out_indices=(len(strides) - 1,)))
    assert last.strides == strides[-1:] and last.out_channels == channels[-1:]


def test_per_output_layer_norm():
    """MambaOut's dense recipe: a LayerNorm on each stage output (over channels, NCHW in and out)."""
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='mambaout_femto', out_indices=(0, 3),
                                 out_norm=dict(type='LN', eps=1e-5)))
    with torch.no_grad():
        for norm in backbone.out_norms:
            norm.weight.normal_()
            norm.bias.normal_()
    img = torch.randn(2, 3, 64, 64)
    feats = backbone(img)
    raw = backbone.body(img)  # NHWC from timm
    for f, r, norm in zip(feats, raw, backbone.out_norms):
        expected = torch.nn.functional.layer_norm(r, r.shape[-1:], norm.weight, norm.bias, 1e-5).permute(0, 3, 1, 2)
        torch.testing.assert_close(f, expected)
    with pytest.raises(ArgumentError, match=r"out_norm='GN'\): expected None or one of \['LN'\]"):
        MODELS.build(dict(type='TimmBackbone', model_name='mambaout_femto', out_norm='GN'))


@pytest.mark.parametrize('name', ['efficientvit_m0', 'mambaout_femto'])
def test_frozen_stages(name):
    for frozen_stages in (0, 1, 2):
        backbone = MODELS.build(dict(type='TimmBackbone', model_name=name, frozen_stages=frozen_stages))
        backbone.train()
        frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
        stem = {n for n in frozen if not n.startswith('body.stages_')}
        assert stem and all(not p.requires_grad for n, p in backbone.named_parameters()
                            if n.startswith('body.') and not n.startswith('body.stages_'))
        for i in range(3):
            stage = {n for n, _ in backbone.named_parameters() if n.startswith(f'body.stages_{i}.')}
            assert (stage <= frozen) == (i < frozen_stages) and (stage & frozen == set()) == (i >= frozen_stages)
        feats = backbone(torch.randn(2, 3, 64, 64))
        sum(f.mean() for f in feats).backward()
        assert all(p.grad is None for n, p in backbone.named_parameters() if n in frozen)
        assert all(p.grad is not None for n, p in backbone.named_parameters()
                   if n not in frozen and n.startswith('body.stages_2'))
        frozen_bn = [m for n, m in backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
                     and all(f'{n}.{p}' in frozen for p, _ in m.named_parameters())]
        assert all(not m.training for m in frozen_bn)
        if name == 'efficientvit_m0':
            assert frozen_bn
    with pytest.raises(ArgumentError, match=r'frozen_stages=4\): expected an int from -1 to 3'):
        MODELS.build(dict(type='TimmBackbone', model_name='efficientvit_m0', frozen_stages=4))


def test_frozen_swin_stage_includes_its_patch_merging():
    """SLAB-Swin's features come from 'layers.i.blocks'; the stage's PatchMerging ('layers.i.downsample') follows the
    blocks and is frozen with them (mmdet's Swin freezes whole stages)."""
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='slab_swin_tiny', frozen_stages=1, img_size=64))
    grad = {n: p.requires_grad for n, p in backbone.named_parameters()}
    assert not any(v for n, v in grad.items() if n.startswith(('body.model.patch_embed.', 'body.model.layers.0.')))
    assert any(n.startswith('body.model.layers.0.downsample.') for n in grad)
    assert all(v for n, v in grad.items() if n.startswith('body.model.layers.1.'))
