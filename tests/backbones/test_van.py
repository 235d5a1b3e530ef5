"""VAN: paper parameter counts, equality with mmpretrain's VAN, official and mmpretrain checkpoints, fusion, timm
contract."""
import json
import math
import os
import re

import pytest
import timm
import torch
import torch.nn as nn
from conftest import require

import visionzoo
import visionzoo.backbones.van  # noqa: F401  (registers van_b*)
from visionzoo.backbones import create_timm_model
from visionzoo.backbones.van import FusedVanBlock, VanBlock, VisualAttentionNetwork, checkpoint_filter_fn
from visionzoo.registry import MODELS
from visionzoo.utils.errors import CheckpointError

VAN_MODELS = ('van_b0', 'van_b1', 'van_b2', 'van_b3', 'van_b4', 'van_b5', 'van_b6')
TINY = dict(embed_dims=(8, 16, 24, 32), depths=(1, 2, 1, 1))
LAYOUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data', 'official_layouts',
                      'van_b0.json')


def randomize_(model, seed=0):
    """Non-trivial values for every parameter and BatchNorm statistic (layer scales of order 1, so that both
    branches of every block matter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith(('layer_scale_1', 'layer_scale_2')):
                p.copy_(noise * 0.5)
            else:
                p.add_(noise * 0.05)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
    return model


def official_state_dict(seed=0):
    """Random tensors with the official VAN-B0 key names and shapes (tests/data/official_layouts/van_b0.json,
    recorded from Visual-Attention-Network/VAN-Classification models/van.py, ``van_b0().state_dict()``)."""
    with open(LAYOUT) as f:
        layout = json.load(f)
    g = torch.Generator().manual_seed(seed)
    return {k: torch.tensor(7) if k.endswith('num_batches_tracked') else torch.randn(shape, generator=g)
            for k, shape in layout}


# ------------------------------------------------------------------------------------------- paper, registry
@pytest.mark.parametrize('name,paper,exact', [('van_b0', 4.1, 4.106), ('van_b1', 13.9, 13.862),
                                              ('van_b2', 26.6, 26.578), ('van_b3', 44.8, 44.766),
                                              ('van_b4', None, 60.283), ('van_b5', None, 89.968),
                                              ('van_b6', None, 199.829)])
def test_param_counts_match_paper(name, paper, exact):
    """1000-class models; B4-B6 have no paper count: theirs is counted from the official model definition."""
    with torch.device('meta'):
        model = timm.create_model(name)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    print(f'{name}: {count:.6f}M parameters')
    if paper is not None:
        assert round(count, 1) == paper
    assert count == pytest.approx(exact, abs=1e-3)


def test_registered_names_and_default_cfgs():
    assert set(timm.list_models('van_*')) == set(VAN_MODELS)
    hub = {'van_b0': ('Tiny', 'van_tiny_754'), 'van_b1': ('Small', 'van_small_811'),
           'van_b2': ('Base', 'van_base_828'), 'van_b3': ('Large', 'van_large_839')}
    for name in VAN_MODELS:
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.input_size == (3, 224, 224) and cfg.crop_pct == 0.9 and cfg.interpolation == 'bicubic'
        assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5)  # official timm 0.4.12 ViT _cfg
        assert cfg.first_conv == 'patch_embed1.proj' and cfg.classifier == 'head'
        if name in hub:
            size, stem = hub[name]
            assert cfg.hf_hub_id == f'Visual-Attention-Network/VAN-{size}-original'
            assert cfg.hf_hub_filename == f'{stem}.pth.tar'
        else:
            assert not cfg.hf_hub_id and not cfg.url


def test_drop_path_schedule_is_official():
    model = VisualAttentionNetwork(drop_path_rate=0.2, **TINY)
    blocks = [b for i in range(4) for b in getattr(model, f'block{i + 1}')]
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for b in blocks]
    assert rates == pytest.approx([0., 0.05, 0.1, 0.15, 0.2])  # linspace(0, rate, sum(depths))
    assert all(torch.all(b.layer_scale_1 == 1e-2) for b in blocks)


@pytest.mark.parametrize('kwargs,pattern', [(dict(global_pool='max'), 'global_pool'),
                                            (dict(depths=(1, 1), embed_dims=(8, 16, 24)), 'one entry per stage')])
def test_bad_arguments_are_clear_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        VisualAttentionNetwork(**kwargs)
    with pytest.raises(ValueError, match='output_fmt'):
        VisualAttentionNetwork(**TINY).forward_intermediates(torch.randn(1, 3, 32, 32), output_fmt='NLC')


# ------------------------------------------------------------------------------------------ against mmpretrain
@pytest.fixture(scope='module')
def mmpretrain_van():
    # mmpretrain's VAN is the pip-installable VAN reference
    return require('mmpretrain.models.backbones', "pip install --no-deps 'mmpretrain==1.2.0' 'mmcv-lite==2.1.0' and "
                   "the rest of the Makefile's MMPRETRAIN_PKGS").VAN


def mmpretrain_classifier_state_dict(mm_backbone, num_classes=1000, seed=1):
    """What an mmpretrain ``ImageClassifier`` (VAN backbone, ``LinearClsHead``) checkpoint holds."""
    g = torch.Generator().manual_seed(seed)
    sd = {'backbone.' + k: v for k, v in mm_backbone.state_dict().items()}
    width = mm_backbone.embed_dims[-1]
    sd['head.fc.weight'] = torch.randn(num_classes, width, generator=g) * 0.02
    sd['head.fc.bias'] = torch.randn(num_classes, generator=g) * 0.02
    return sd


def test_matches_mmpretrain_stage_outputs(mmpretrain_van):
    torch.manual_seed(0)
    ref = mmpretrain_van(arch='tiny', out_indices=(0, 1, 2, 3), norm_cfg=dict(type='LN', eps=1e-6))
    randomize_(ref)
    ref.eval()  # mmpretrain's VAN.train() returns None: do not chain
    model = timm.create_model('van_b0').eval()
    model.load_state_dict(checkpoint_filter_fn(mmpretrain_classifier_state_dict(ref), model), strict=True)
    features = timm.create_model('van_b0', features_only=True).eval()
    features.model.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith('head.')})
    img = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = ref(img)
        ours = model.forward_intermediates(img, intermediates_only=True)
        from_features = features(img)
    assert [e.shape for e in expected] == [(2, 32, 16, 12), (2, 64, 8, 6), (2, 160, 4, 3), (2, 256, 2, 2)]
    for i, (e, a, f) in enumerate(zip(expected, ours, from_features)):
        err = (a - e).abs().max().item()
        print(f'stage {i}: max |ours - mmpretrain| = {err:.2e}')
        assert err <= 1e-5
        assert torch.equal(a, f)


def test_logits_match_mmpretrain_classifier(mmpretrain_van):
    """The whole classifier, head included: mmpretrain's ``ImageClassifier`` (VAN-tiny backbone, its last stage ->
    ``GlobalAveragePooling`` -> ``LinearClsHead``) and van_b0 on the same weights (its state_dict, converted) give
    the same logits. The head weights are scaled so that logits are of order 1."""
    from mmpretrain.models.classifiers import ImageClassifier
    torch.manual_seed(0)
    ref = ImageClassifier(backbone=dict(type='VAN', arch='tiny', norm_cfg=dict(type='LN', eps=1e-6)),
                          neck=dict(type='GlobalAveragePooling'),
                          head=dict(type='LinearClsHead', num_classes=10, in_channels=256))
    randomize_(ref.backbone)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ref.head.fc.weight.copy_(torch.randn(10, 256, generator=g) / 16)
        ref.head.fc.bias.copy_(torch.randn(10, generator=g) * 0.1)
    ref.eval()
    model = timm.create_model('van_b0', num_classes=10).eval()
    model.load_state_dict(checkpoint_filter_fn(ref.state_dict(), model), strict=True)
    img = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = ref(img, mode='tensor')  # LinearClsHead's class scores before the softmax
        logits = model(img)
    assert expected.shape == (2, 10) and expected.abs().max() > 0.5
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize('wrap', ['bare', 'state_dict', 'model', 'module'])
def test_official_layout_loads_strictly(wrap):
    sd = official_state_dict()
    ckpt = {'bare': lambda: sd, 'state_dict': lambda: {'state_dict': sd, 'epoch': 299},
            'model': lambda: {'model': sd}, 'module': lambda: {'state_dict': {'module.' + k: v for k, v in sd.items()}},
            }[wrap]()
    model = timm.create_model('van_b0')
    model.load_state_dict(checkpoint_filter_fn(ckpt, model), strict=True)
    loaded = model.state_dict()
    assert set(loaded) == set(sd)
    assert all(torch.equal(v, sd[k]) for k, v in loaded.items())


def test_mmpretrain_layout_loads_strictly(mmpretrain_van):
    ref = mmpretrain_van(arch='tiny')
    sd = mmpretrain_classifier_state_dict(ref)
    assert any('.DW_D_conv.' in k for k in sd) and 'backbone.patch_embed1.projection.weight' in sd
    model = timm.create_model('van_b0')
    for ckpt in (sd, {'state_dict': {'module.' + k: v for k, v in sd.items()}}):
        converted = checkpoint_filter_fn(ckpt, model)
        model.load_state_dict(converted, strict=True)
    assert torch.equal(model.block2[1].attn.spatial_gating_unit.conv_spatial.weight,
                       sd['backbone.blocks2.1.attn.spatial_gating_unit.DW_D_conv.weight'])
    assert torch.equal(model.block4[0].mlp.dwconv.dwconv.bias, sd['backbone.blocks4.0.mlp.dwconv.bias'])
    assert torch.equal(model.head.weight, sd['head.fc.weight'])


def test_checkpoint_files_through_create_timm_model(tmp_path, mmpretrain_van):
    official = official_state_dict()
    path = tmp_path / 'van_tiny_754.pth.tar'
    torch.save({'state_dict': official, 'epoch': 299, 'arch': 'van_b0'}, path)
    model = create_timm_model('van_b0', pretrained=str(path))
    assert torch.equal(model.norm3.weight, official['norm3.weight'])
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='van_b0', pretrained=str(path), out_indices=(1, 2)))
    assert torch.equal(backbone.body.model.block3[4].layer_scale_2, official['block3.4.layer_scale_2'])

    mm = mmpretrain_classifier_state_dict(mmpretrain_van(arch='tiny'))
    mm_path = tmp_path / 'van-tiny_8xb128_in1k.pth'
    torch.save({'meta': {'epoch': 300}, 'state_dict': mm}, mm_path)
    model = create_timm_model('van_b0', pretrained=str(mm_path), num_classes=10)
    assert torch.equal(model.patch_embed2.proj.weight, mm['backbone.patch_embed2.projection.weight'])
    assert model.head.weight.shape == (10, 256)


def test_missing_key_is_a_clear_error(tmp_path):
    sd = official_state_dict()
    del sd['block2.1.attn.spatial_gating_unit.conv0.weight']
    path = tmp_path / 'broken.pth.tar'
    torch.save({'state_dict': sd}, path)
    key = 'block2.1.attn.spatial_gating_unit.conv0.weight'
    with pytest.raises(CheckpointError, match='does not load into van_b0') as e:
        create_timm_model('van_b0', pretrained=str(path))  # strict load: the key is in the chained error
    assert key in str(e.value.__cause__)
    with pytest.raises(CheckpointError, match=re.escape(key)):
        create_timm_model('van_b0', pretrained=str(path), features_only=True)  # non-strict: reported keys


# ------------------------------------------------------------------------------------------------------ fusion
def test_fuse_matches_eval_model_with_fewer_batchnorms():
    torch.manual_seed(0)
    model = randomize_(timm.create_model('van_b0', num_classes=10, **TINY)).eval()
    fused = visionzoo.fuse(model)
    img = torch.randn(2, 3, 64, 40)
    with torch.no_grad():
        expected, got = model(img), fused(img)
        expected_maps = model.forward_intermediates(img, intermediates_only=True)
        got_maps = fused.forward_intermediates(img, intermediates_only=True)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * scale)
    for e, a in zip(expected_maps, got_maps):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5 * e.abs().max().item())

    def count(m, cls):
        return sum(isinstance(x, cls) for x in m.modules())
    assert count(model, nn.BatchNorm2d) == 2 * 5 + 4 and count(fused, nn.BatchNorm2d) == 0
    assert count(fused, FusedVanBlock) == 5 and count(fused, VanBlock) == 0
    assert count(model, FusedVanBlock) == 0  # fuse() works on a copy


def test_block_fuse_needs_eval_mode():
    with pytest.raises(ValueError, match='eval mode'):
        VanBlock(8).fuse()


def test_features_only_and_registry_backbone():
    torch.manual_seed(0)
    img = torch.randn(1, 3, 96, 64)
    features = timm.create_model('van_b0', features_only=True, out_indices=(1, 3), **TINY)
    assert features.feature_info.channels() == [16, 32] and features.feature_info.reduction() == [8, 32]
    assert [f.shape for f in features(img)] == [(1, 16, 12, 8), (1, 32, 3, 2)]
    partial = timm.create_model('van_b0', features_only=True, out_indices=(0, 1), **TINY)
    assert not hasattr(partial.model, 'block3') and not hasattr(partial.model, 'norm4')  # pruned after stage 2

    backbone = MODELS.build(dict(type='TimmBackbone', model_name='van_b0', with_cp=True, **TINY))
    assert backbone.out_channels == [8, 16, 24, 32] and backbone.strides == [4, 8, 16, 32]
    maps = backbone(img)
    assert [m.shape for m in maps] == [(1, 8, 24, 16), (1, 16, 12, 8), (1, 24, 6, 4), (1, 32, 3, 2)]
    assert all(m.is_contiguous() for m in maps)


@pytest.mark.parametrize('size', [(67, 45), (32, 96), (17, 33)])
def test_any_input_size(size):
    """Every convolution pads half its kernel: stage i has ceil(side / 2**(i + 2)) pixels, any size works."""
    model = timm.create_model('van_b0', num_classes=5, **TINY).eval()
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
        assert model(torch.randn(1, 3, *size)).shape == (1, 5)
    expected = [(math.ceil(size[0] / 2 ** (i + 2)), math.ceil(size[1] / 2 ** (i + 2))) for i in range(4)]
    assert [tuple(m.shape[-2:]) for m in maps] == expected
