"""Official mmseg segmentor checkpoints load strictly into EncoderDecoder (issue 14, "Official checkpoints").

References: the recorded official layouts ``tests/data/official_layouts/seg_{van_b2,biformer_s}_{sfpn,upernet}.json``
(key names and shapes in ``state_dict()`` order, which is the order mmcv's ``save_checkpoint`` writes). Recipe, as
each file's ``source`` entry says: the official backbone code (VAN-Segmentation van.py at 9b9e632 for S-FPN and
8285fc7 for UperNet; BiFormer semantic_segmentation/models_mm/biformer_mm.py at 1697bbb) with the official config,
``mmseg.models.build_segmentor(Config.fromfile(CONFIG).model)`` under mmsegmentation 0.30.0 / mmcv 1.7.2 on CPU
(compiled ops stubbed), then ``[[k, list(v.shape)] for k, v in model.state_dict().items()]``. The official settings
the models here are built with come from each file's ``config`` entry. Values are synthetic (each tensor filled with
its index in the layout), so a test can follow each tensor to where it lands.

Timm-layout round trips (a full classifier's state dict into the dense wrapper) compare against the full model's own
``forward_intermediates``.
"""
import functools
import re
from types import SimpleNamespace
from typing import Dict

import pytest
import timm
import torch

import visionzoo  # noqa: F401  (registers everything)
from conftest import official_layout
from visionzoo.backbones.timm_backbone import TimmBackbone
from visionzoo.engine.checkpoint import load_model_weights
from visionzoo.engine.resume import CheckpointKeysHook
from visionzoo.registry import MODELS
from visionzoo.utils.errors import CheckpointError

SYNC_BN = dict(type='SyncBN', requires_grad=True)
HEAD_KEYS = ('in_channels', 'in_index', 'channels', 'dropout_ratio', 'num_classes', 'align_corners', 'pool_scales',
             'feature_strides', 'num_convs', 'kernel_size', 'concat_input')
# the backbone of each recorded checkpoint, as its "config" entry describes it
BACKBONES = {
    # van.py@9b9e632 (the released S-FPN checkpoint): stage LayerNorms eps 1e-6 (partial(nn.LayerNorm, eps=1e-6))
    'seg_van_b2_sfpn': dict(type='TimmBackbone', model_name='van_b2', out_indices=(0, 1, 2, 3), norm_eps=1e-6),
    # van.py@8285fc7 (UperNet checkpoints): nn.LayerNorm(embed_dims[i]), torch's default eps 1e-5
    'seg_van_b2_upernet': dict(type='TimmBackbone', model_name='van_b2', out_indices=(0, 1, 2, 3), norm_eps=1e-5),
    # biformer_mm.py: extra_norms = timm LayerNorm2d (eps 1e-6) on every stage output, 8 routing regions per side
    'seg_biformer_s_sfpn': dict(type='TimmBackbone', model_name='biformer_small', out_indices=(0, 1, 2, 3), n_win=8,
                                out_norm='LN'),
    'seg_biformer_s_upernet': dict(type='TimmBackbone', model_name='biformer_small', out_indices=(0, 1, 2, 3),
                                   n_win=8, out_norm='LN'),
}
# (official backbone key, our backbone key) followed through the conversion, per family
SPOTS = {
    'van': [('patch_embed1.proj.weight', 'body.model.patch_embed1.proj.weight'),
            ('block3.11.attn.spatial_gating_unit.conv_spatial.weight',
             'body.model.block3.11.attn.spatial_gating_unit.conv_spatial.weight'),
            ('norm4.bias', 'body.model.norm4.bias')],
    'biformer': [('downsample_layers.0.0.weight', 'body.model.downsample_layers.0.0.weight'),
                 ('stages.2.17.attn.qkv.qkv.weight', 'body.model.stages.2.17.attn.qkv.qkv.weight'),
                 ('extra_norms.0.weight', 'out_norms.0.weight'), ('extra_norms.3.bias', 'out_norms.3.bias')],
}


def _head(cfg: dict, loss_weight: float) -> dict:
    head = {k: (tuple(v) if k == 'pool_scales' else v) for k, v in cfg.items() if k in HEAD_KEYS}
    return dict(head, type=cfg['type'], norm_cfg=SYNC_BN,
                loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=loss_weight))


def segmentor_cfg(name: str, **backbone) -> dict:
    """An EncoderDecoder config with the official settings recorded in ``name``'s ``config`` entry."""
    cfg = official_layout(name)['config']
    model = dict(type='EncoderDecoder', backbone=dict(BACKBONES[name], **backbone),
                 decode_head=_head(cfg['decode_head'], 1.0))
    if cfg.get('neck'):
        neck = cfg['neck']
        assert neck['type'] == 'FPN' and not neck['add_extra_convs'] and neck['start_level'] == 0
        model['neck'] = dict(type='FPN', in_channels=neck['in_channels'], out_channels=neck['out_channels'],
                             num_outs=neck['num_outs'])
    if cfg.get('auxiliary_head'):
        model['auxiliary_head'] = _head(cfg['auxiliary_head'], 0.4)
    return model


def build_meta(name: str, **backbone):
    """The segmentor on the meta device: keys and shapes without the memory and initialisation cost."""
    with torch.device('meta'):
        return MODELS.build(segmentor_cfg(name, **backbone))


@functools.lru_cache(maxsize=None)
def _official_state(name: str) -> Dict[str, torch.Tensor]:
    # every tensor filled with its own index: a tensor that lands in the wrong place (even one of the same shape)
    # shows, and building it costs nothing next to random values for ~30M UperNet weights
    return {k: torch.tensor(7) if k.endswith('num_batches_tracked') else torch.full(shape, float(i))
            for i, (k, shape) in enumerate(official_layout(name)['keys'])}


def official_state(name: str) -> Dict[str, torch.Tensor]:
    """A synthetic checkpoint in the recorded official layout and order (a fresh dict of shared tensors)."""
    return dict(_official_state(name))


@pytest.fixture(scope='module')
def van_sfpn():
    """A real (not meta) VAN-B2 S-FPN, so that the loaders' copies can be checked, and its official checkpoint."""
    return MODELS.build(segmentor_cfg('seg_van_b2_sfpn')), official_state('seg_van_b2_sfpn')


LAYOUTS = list(BACKBONES)


@pytest.mark.parametrize('name', LAYOUTS)
def test_official_layout_loads_strictly_and_every_tensor_lands(name):
    model = build_meta(name)
    state = official_state(name)
    converted = model.convert_checkpoint(state)
    # a bijection: every official tensor has exactly one place (nothing dropped, nothing duplicated)
    assert len(converted) == len(state) == len(model.state_dict())
    assert {id(v) for v in converted.values()} == {id(v) for v in state.values()}
    model.load_state_dict(converted, strict=True, assign=True)  # assign: the model now holds these very tensors
    own = model.state_dict()

    def same(ours, official):
        return own[ours].data_ptr() == state[official].data_ptr() and torch.equal(own[ours], state[official])

    # heads and neck: mmseg's names, unchanged
    for key in [k for k in state if not k.startswith('backbone.')]:
        assert same(key, key), key
    for official, ours in SPOTS[name.split('_')[1]]:
        assert same('backbone.' + ours, 'backbone.' + official), official


def test_norm_eps_follow_the_official_code():
    """What the tensors cannot say: out_norm='LN' is BiFormer's extra_norms (timm LayerNorm2d, eps 1e-6), and the
    stage-norm epsilon of each VAN checkpoint's code reaches the model (1e-6 at 9b9e632, nn.LayerNorm's 1e-5 at
    8285fc7)."""
    assert build_meta('seg_biformer_s_upernet').backbone.out_norms[3].eps == 1e-6  # timm LayerNorm2d default
    assert build_meta('seg_van_b2_sfpn').backbone.body.model.norm1.eps == 1e-6
    assert build_meta('seg_van_b2_upernet').backbone.body.model.norm4.eps == 1e-5


def test_tools_test_loader_converts_then_loads_strictly(van_sfpn):
    model, state = van_sfpn
    for checkpoint in (dict(state), {'module.' + k: v for k, v in state.items()}):  # also with a DDP prefix
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        load_model_weights(model, checkpoint, 'van.pth')  # tools/test.py CONFIG CKPT
        own = model.state_dict()
        for ours, official in (('backbone.body.model.block3.4.mlp.fc1.weight', 'backbone.block3.4.mlp.fc1.weight'),
                               ('backbone.body.model.norm2.weight', 'backbone.norm2.weight'),
                               ('neck.fpn_convs.3.conv.bias', 'neck.fpn_convs.3.conv.bias'),
                               ('decode_head.scale_heads.3.4.bn.running_var',
                                'decode_head.scale_heads.3.4.bn.running_var')):
            assert torch.equal(own[ours], state[official]), official


def test_missing_or_extra_official_key_is_an_error_naming_it(van_sfpn):
    model, state = van_sfpn
    missing = {k: v for k, v in state.items() if k != 'backbone.block2.1.mlp.fc1.weight'}
    with pytest.raises(CheckpointError, match=r'van\.pth: .*1 missing \(e\.g\. backbone\.body\.model\.block2\.1\.mlp'
                                              r'\.fc1\.weight\)'):
        load_model_weights(model, missing, 'van.pth')
    for extra in ('backbone.block5.0.norm1.weight', 'decode_head.conv_extra.weight', 'backbone.extra_norms.0.weight'):
        with pytest.raises(CheckpointError, match=r'1 unexpected \(e\.g\. ' + extra.replace('.', r'\.') + r'\)'):
            load_model_weights(model, dict(state, **{extra: torch.zeros(3)}), 'van.pth')
    wrong = dict(state, **{'backbone.norm2.weight': torch.zeros(5)})
    with pytest.raises(CheckpointError, match=r'shape mismatch \(e\.g\. backbone\.body\.model\.norm2\.weight \(5,\) '
                                              r'vs \(128,\)\)'):
        load_model_weights(model, wrong, 'van.pth')


def test_per_output_norms_need_out_norm_in_the_config():
    """BiFormer's extra_norms without out_norm='LN' in the backbone config: named, not silently dropped."""
    model = build_meta('seg_biformer_s_sfpn', out_norm=None)
    with pytest.raises(CheckpointError, match=r'8 unexpected \(e\.g\. backbone\.extra_norms\.0\.weight, '
                                              r'backbone\.extra_norms\.0\.bias'):
        load_model_weights(model, official_state('seg_biformer_s_sfpn'), 'biformer.pth')


def test_load_from_hook_converts_and_hands_the_runner_our_keys(van_sfpn):
    model, state = van_sfpn
    runner = SimpleNamespace(model=model, _resume=False, _load_from='van.pth')
    checkpoint = dict(meta=dict(), state_dict=dict(state))
    CheckpointKeysHook().after_load_checkpoint(runner, checkpoint)
    loaded = checkpoint['state_dict']
    assert list(loaded) == list(model.state_dict())
    assert loaded['backbone.body.model.block1.0.layer_scale_1'] is state['backbone.block1.0.layer_scale_1']
    bad = dict(meta=dict(), state_dict={k: v for k, v in state.items() if not k.startswith('backbone.norm3.')})
    with pytest.raises(CheckpointError, match=r'load_from=van\.pth: .*2 missing \(backbone\.body\.model\.norm3\.'
                                              r'weight, backbone\.body\.model\.norm3\.bias\)'):
        CheckpointKeysHook().after_load_checkpoint(runner, bad)


def test_own_checkpoints_pass_unchanged(van_sfpn):
    model, _ = van_sfpn
    own = model.state_dict()
    assert model.convert_checkpoint(own) is own
    load_model_weights(model, dict(own), 'own.pth')
    runner = SimpleNamespace(model=model, _resume=False, _load_from='own.pth')
    checkpoint = dict(meta=dict(), state_dict=dict(own))
    saved = checkpoint['state_dict']
    CheckpointKeysHook().after_load_checkpoint(runner, checkpoint)
    assert checkpoint['state_dict'] is saved


@pytest.mark.parametrize('model_name, kwargs', [
    ('resnet10t', {}),  # FeatureListNet: flattened top-level Sequentials (layer1.0 -> layer1_0), fc dropped
    ('van_b0', {}),  # getter wrapper (model.), classifier dropped
    ('biformer_tiny', dict(n_win=4, depths=(1, 1, 2, 1))),  # getter wrapper, final BatchNorm and classifier dropped
])
def test_classification_layout_into_the_dense_backbone_gives_the_full_models_features(model_name, kwargs):
    torch.manual_seed(0)
    full = timm.create_model(model_name, **kwargs).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in full.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    backbone = TimmBackbone(model_name, **kwargs).eval()
    converted = backbone.convert_state_dict(full.state_dict())
    backbone.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 64, 64)
    indices = list(backbone.body.feature_info.out_indices)
    with torch.no_grad():
        expected = full.forward_intermediates(x, indices=indices, intermediates_only=True)
        got = backbone(x)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _BeitPyramid(torch.nn.Module):
    """Stand-in for a neck holding the official Vim/BEiT pyramid under its names (visionzoo has none yet): fpn1 =
    ConvTranspose2d, BN, GELU, ConvTranspose2d; fpn2 = ConvTranspose2d; fpn3 = Identity; fpn4 = MaxPool2d."""

    def __init__(self, channels: int):
        super().__init__()
        self.fpn1 = torch.nn.Sequential(torch.nn.ConvTranspose2d(channels, channels, 2, 2),
                                        torch.nn.BatchNorm2d(channels), torch.nn.GELU(),
                                        torch.nn.ConvTranspose2d(channels, channels, 2, 2))
        self.fpn2 = torch.nn.Sequential(torch.nn.ConvTranspose2d(channels, channels, 2, 2))
        self.fpn3, self.fpn4 = torch.nn.Identity(), torch.nn.MaxPool2d(2)


def test_vim_layout_maps_onto_the_backbone_and_a_pyramid_neck_with_the_official_names():
    """Vim seg (hustvl/Vim@bb3928b seg/backbone/vim.py): the backbone weights map onto TimmBackbone('vim_tiny') (no
    class token, 32x32 position grid, norm_f dropped with the pruned final norm), and the pyramid the official code
    keeps in its backbone (backbone.fpn1/fpn2) moves to a neck that has fpn1/fpn2."""
    from visionzoo.models.seg_checkpoint import convert_segmentor_state_dict
    name = 'seg_vim_tiny_upernet'
    cfg = official_layout(name)['config']
    with torch.device('meta'):
        model = torch.nn.Module()
        model.backbone = TimmBackbone('vim_tiny', out_indices=(5, 11, 17, 23), img_size=512, class_token=False)
        model.neck = _BeitPyramid(192)
        model.decode_head = MODELS.build(_head(cfg['decode_head'], 1.0))
        model.auxiliary_head = MODELS.build(_head(cfg['auxiliary_head'], 0.4))
    state = official_state(name)
    converted = convert_segmentor_state_dict(model, state)
    assert set(converted) == set(model.state_dict())
    back = {re.sub(r'^(?:backbone\.body\.model|neck)\.', 'backbone.', k) for k in converted}
    assert back == set(state) - {'backbone.norm_f.weight'}  # norm_f: stored, unused (last_layer_process='none')
    model.load_state_dict(converted, strict=True, assign=True)
    own = model.state_dict()
    for official, ours in (('backbone.pos_embed', 'backbone.body.model.pos_embed'),
                           ('backbone.layers.23.mixer.A_b_log', 'backbone.body.model.layers.23.mixer.A_b_log'),
                           ('backbone.fpn1.1.running_var', 'neck.fpn1.1.running_var'),
                           ('backbone.fpn2.0.weight', 'neck.fpn2.0.weight')):
        assert torch.equal(own[ours], state[official]), official
    # without such a neck the pyramid stays under backbone.* and a strict load names it
    del model.neck
    leftover = sorted(set(convert_segmentor_state_dict(model, state)) - set(model.state_dict()))
    assert leftover == sorted(k for k in state if k.startswith(('backbone.fpn1.', 'backbone.fpn2.')))
