"""timm's model contract, checked the way timm's own tests/test_models.py checks it, over every model visionzoo
registers in timm (tiny configurations from ``_helpers.CONTRACT_CASES``; full sizes only on the meta device)."""
import copy
import math

import pytest
import timm
import timm.optim
import torch
import torch.nn as nn
from _helpers import all_cases
from conftest import official_layout, synthetic_state_dict
from timm.models import _registry
from timm.models._features_fx import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import visionzoo  # noqa: F401  (registers the families)
from visionzoo.backbones import create_timm_model
from visionzoo.utils.errors import ArgumentError

CASES = all_cases()
IDS = [c.name for c in CASES]
DEEP = [c for c in CASES if c.deep]  # the checks that run forwards and backwards beyond the first
DEEP_IDS = [c.name for c in DEEP]
FMTS = ('NCHW', 'NHWC', 'NLC')


def build(case, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(case.name, **dict(case.kwargs, **kwargs))
    with torch.no_grad():  # non-trivial values everywhere (zero positional encodings, unit norms by default)
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if p.dim() == 1 or 'pos' in name or name.endswith('positional_encoding'):
                p.add_(0.1 * torch.randn(p.shape, generator=g).abs())
    return model


def image(case, size=None, batch=2):
    return torch.randn(batch, 3, *(size or case.size), generator=torch.Generator().manual_seed(2))


def token_model(model) -> bool:
    return hasattr(model, 'num_prefix_tokens')


def to_nchw(t, fmt, grid=None):
    if fmt == 'NHWC':
        return t.permute(0, 3, 1, 2)
    if fmt == 'NLC':
        return t.transpose(1, 2).unflatten(2, grid)
    return t


def mid_schedule_(model):
    """SLAB's PRepBN halfway from LayerNorm to RepBN, so that both receive gradients."""
    for m in model.modules():
        if hasattr(m, 'total_step') and hasattr(m, 'iter'):
            m.iter.fill_(m.total_step.item() // 2)
    return model


def assert_close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(b.abs().max().item(), 1.))


def test_every_registered_model_has_a_case():
    ours = {n for n in timm.list_models() if _registry._model_entrypoints[n].__module__.startswith('visionzoo.')}
    assert ours == set(IDS)
    assert {'vim', 'van', 'slab', 'biformer'} <= {name.split('_')[0] for name in ours}


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_forward_head_and_classifier_reset(case):
    model = build(case, num_classes=7).eval()
    img = image(case)
    with torch.no_grad():
        feats = model.forward_features(img)
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, model.head_hidden_size)
        logits = model(img)
        assert logits.shape == (2, 7) and torch.isfinite(logits).all()
        assert torch.equal(logits, model.forward_head(feats))
        assert model.get_classifier() is model.head
        model.reset_classifier(0)
        assert torch.equal(model(img), pooled) and pooled.shape[-1] == model.num_features
        model.reset_classifier(0, '')
        assert torch.equal(model(img), feats)
        model.reset_classifier(3, model.GLOBAL_POOLS[0] if hasattr(model, 'GLOBAL_POOLS') else 'avg')
        assert model(img).shape == (2, 3)
    with pytest.raises(ArgumentError, match=rf'^{type(model).__name__}\(global_pool=\'max\'\)'):
        model.reset_classifier(3, 'max')


@pytest.mark.parametrize('case', [c for c in CASES if timm.models.get_pretrained_cfg(c.name).pool_size], ids=str)
def test_pool_size_at_the_default_input_size(case):
    """timm's test_model_default_cfgs: forward_features at the cfg input size ends in a ``pool_size`` map."""
    model = build(case).eval()
    cfg = model.pretrained_cfg
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, *cfg['input_size']))
    spatial = feats.shape[1:3] if getattr(model, 'output_fmt', 'NCHW') == 'NHWC' else feats.shape[-2:]
    assert tuple(spatial) == tuple(cfg['pool_size'])


@pytest.mark.parametrize('case', DEEP, ids=DEEP_IDS)
def test_forward_intermediates(case):
    model = build(case).eval()
    img = image(case)
    info = model.feature_info
    with torch.no_grad():
        final, inter = model.forward_intermediates(img)
        torch.testing.assert_close(final, model.forward_features(img))
        assert len(inter) == len(info)
        for t, i in zip(inter, info):
            assert t.shape[:2] == (2, i['num_chs']) and torch.isfinite(t).all()
            for side, got in zip(case.size, t.shape[-2:]):
                assert abs(got - math.ceil(side / i['reduction'])) <= 1
        grid = tuple(inter[-1].shape[-2:])
        for fmt in FMTS[1:]:  # every output_fmt: the same maps in another layout, or an ArgumentError
            try:
                other = model.forward_intermediates(img, output_fmt=fmt, intermediates_only=True)
            except ArgumentError as e:
                assert str(e).startswith(f"{type(model).__name__}.forward_intermediates(output_fmt='{fmt}')")
                continue
            assert all(torch.equal(to_nchw(o, fmt, grid), t) for o, t in zip(other, inter))
        n = len(info)
        last2 = model.forward_intermediates(img, indices=2, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(last2, inter[-2:]))
        picked = model.forward_intermediates(img, indices=[0, -1], intermediates_only=True, stop_early=True)
        assert torch.equal(picked[0], inter[0]) and torch.equal(picked[1], inter[n - 1])
        early = model.forward_intermediates(img, indices=[0], intermediates_only=True, stop_early=True)
        assert len(early) == 1 and torch.equal(early[0], inter[0])
        normed = model.forward_intermediates(img, indices=[n - 1], norm=True, intermediates_only=True)
        assert normed[0].shape == inter[-1].shape and torch.isfinite(normed[0]).all()


@pytest.mark.parametrize('case', DEEP, ids=DEEP_IDS)
def test_prune_intermediate_layers(case):
    model = build(case).eval()
    img = image(case)
    with torch.no_grad():
        inter = model.forward_intermediates(img, intermediates_only=True)
    params = sum(p.numel() for p in model.parameters())
    kept = model.prune_intermediate_layers(indices=[0, 1], prune_norm=True)
    assert list(kept) == [0, 1]
    assert isinstance(model.head, nn.Identity) and model.num_classes == 0
    assert sum(p.numel() for p in model.parameters()) < params
    with torch.no_grad():
        pruned = model.forward_intermediates(img, indices=[0, 1], intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(pruned, inter[:2]))
        model.forward_intermediates(img, indices=[0, 1])  # the full call runs on the pruned model too


@pytest.mark.parametrize('case', DEEP, ids=DEEP_IDS)
def test_features_only(case):
    """timm's default (getter) and FX feature extractors: feature_info channels and strides, and the maps."""
    model = build(case).eval()
    img = image(case)
    out_indices = (0, 1)
    with torch.no_grad():
        inter = model.forward_intermediates(img, indices=list(out_indices), intermediates_only=True)
    expected_info = [model.feature_info[i] for i in out_indices]
    for feature_cls in ('getter', 'fx'):
        torch.manual_seed(0)
        features = timm.create_model(case.name, features_only=True, out_indices=out_indices, feature_cls=feature_cls,
                                     **case.kwargs)
        target = features.model if feature_cls == 'getter' else features.graph_module  # (pruned) model, FX graph
        missing = target.load_state_dict(model.state_dict(), strict=False).missing_keys
        assert not set(missing) & set(dict(model.named_parameters()))
        assert features.feature_info.channels() == [i['num_chs'] for i in expected_info]
        assert features.feature_info.reduction() == [i['reduction'] for i in expected_info]
        with torch.no_grad():
            maps = features.eval()(img)
        assert len(maps) == len(out_indices)
        if feature_cls == 'getter':
            assert all(torch.equal(m, t) for m, t in zip(maps, inter))
        elif token_model(model):  # ViT convention: the block outputs, channels last
            assert all(m.shape[0] == 2 and m.shape[-1] == i['num_chs'] for m, i in zip(maps, expected_info))
        else:  # stage outputs in the model's output_fmt
            fmt = getattr(model, 'output_fmt', 'NCHW')
            assert features.output_fmt == fmt
            for m, t in zip(maps, inter):
                assert_close(to_nchw(m, fmt), t)


def fx_model(model):
    """timm's test_models._create_fx_model: torchvision's feature extractor on the model's last node, traced with
    timm's leaf modules and autowrapped functions."""
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize('case', DEEP, ids=DEEP_IDS)
def test_fx_trace_forward_and_backward(case):
    """timm's test_model_forward_fx / test_model_backward_fx: the traced model equals the eager one (outputs and
    gradients in eval mode) and every parameter gets a gradient in train mode."""
    model = mid_schedule_(build(case, num_classes=5)).eval()
    img = image(case)
    traced = fx_model(model).eval()
    out = model(img)
    out_fx = next(iter(traced(img).values()))
    assert_close(out_fx, out)
    out.square().sum().backward()
    out_fx.square().sum().backward()
    fx_grads = dict(traced.named_parameters())
    for name, p in model.named_parameters():  # eval mode: SLAB's PRepBN LayerNorms are unused (no gradient)
        if p.grad is None:
            assert name not in fx_grads or fx_grads[name].grad is None, name
        else:
            assert_close(fx_grads[name].grad, p.grad)

    train = mid_schedule_(build(case, num_classes=5)).train()
    traced = fx_model(train).train()
    next(iter(traced(img).values())).square().sum().backward()
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing}'


@pytest.mark.parametrize('case', DEEP, ids=DEEP_IDS)
def test_grad_checkpointing(case, monkeypatch):
    model = mid_schedule_(build(case, num_classes=5)).train()
    plain = copy.deepcopy(model)
    img = image(case)
    expected = plain(img)
    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint', lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    model.set_grad_checkpointing(True)
    out = model(img)
    assert calls, 'set_grad_checkpointing(True) checkpointed nothing'
    assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    plain_grads = dict(plain.named_parameters())
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f'no gradient for {missing}'
    for name, p in model.named_parameters():
        assert_close(p.grad, plain_grads[name].grad)
    model.set_grad_checkpointing(False)
    calls.clear()
    model(img)
    assert not calls


@pytest.mark.parametrize('case', DEEP, ids=DEEP_IDS)
def test_no_weight_decay_and_layer_decay_groups(case):
    """What timm's optimizer factory reads: ``no_weight_decay`` names real parameters (they get no decay), and
    ``group_matcher`` puts every parameter in a layer-decay group."""
    model = build(case)
    names = dict(model.named_parameters())
    skip = model.no_weight_decay() if hasattr(model, 'no_weight_decay') else set()
    assert set(skip) <= set(names), set(skip) - set(names)
    optimizer = timm.optim.create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    grouped = [p for g in optimizer.param_groups for p in g['params']]
    assert len(grouped) == len(names) and {id(p) for p in grouped} == {id(p) for p in names.values()}
    no_decay = {id(p) for g in optimizer.param_groups if g['weight_decay'] == 0 for p in g['params']}
    assert all(id(names[n]) in no_decay for n in skip)


CFG_REQUIRED = ('input_size', 'crop_pct', 'interpolation', 'mean', 'std', 'first_conv', 'classifier', 'num_classes')


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_full_size_builds_on_the_meta_device_with_a_complete_pretrained_cfg(case):
    """Full size on the meta device (no memory, no init compute); the pretrained cfg is complete and its module
    names exist in the model."""
    with torch.device('meta'):
        model = timm.create_model(case.name)
    assert all(p.is_meta for p in model.parameters()) and model.feature_info and model.num_features > 0
    assert model.get_classifier().out_features == model.pretrained_cfg['num_classes'] == 1000
    cfg = model.pretrained_cfg
    missing = [k for k in CFG_REQUIRED if cfg.get(k) is None]
    assert not missing, f'{case.name}: pretrained cfg lacks {missing}'
    assert len(cfg['input_size']) == 3 and len(cfg['mean']) == len(cfg['std']) == 3
    assert 0 < cfg['crop_pct'] <= 1 and cfg['interpolation'] in ('bicubic', 'bilinear', 'nearest')
    assert getattr(model.get_submodule(cfg['first_conv']), 'in_channels', 3) == 3
    for classifier in (cfg['classifier'],) if isinstance(cfg['classifier'], str) else cfg['classifier']:
        assert model.get_submodule(classifier).out_features == cfg['num_classes']
    if cfg.get('tag'):  # a tagged cfg ('van_b0.in1k') stands for released weights: it must say where they are
        assert cfg.get('hf_hub_id') or cfg.get('url'), f'{case.name}.{cfg["tag"]}: no hf_hub_id or url'


@pytest.mark.parametrize('case', DEEP, ids=DEEP_IDS)
def test_non_default_input_size(case):
    model = build(case, num_classes=4).eval()
    img = image(case, case.other_size, batch=1)
    with torch.no_grad():
        assert model(img).shape == (1, 4)
        maps = model.forward_intermediates(img, intermediates_only=True)
    for t, i in zip(maps, model.feature_info):
        for side, got in zip(case.other_size, t.shape[-2:]):
            assert abs(got - math.ceil(side / i['reduction'])) <= 1


LAYOUTS = [c.name for c in CASES if c.name in ('biformer_tiny', 'slab_swin_tiny', 'slab_deit_tiny', 'van_b0')]


@pytest.mark.parametrize('name', LAYOUTS)
def test_official_checkpoint_with_a_missing_key_names_it(tmp_path, name):
    from _helpers import assert_missing_key_is_reported
    layout = official_layout(name)
    keys = layout['keys'] if isinstance(layout, dict) else layout
    state_dict = synthetic_state_dict(keys)
    weights = [k for k, _ in keys if k.endswith('.weight') and k in state_dict]
    key = weights[len(weights) // 2]
    assert_missing_key_is_reported(
        tmp_path, lambda path: create_timm_model(name, pretrained=path, num_classes=0), state_dict, key)
