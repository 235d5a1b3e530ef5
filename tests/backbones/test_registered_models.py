"""Every model visionzoo registers in timm: a complete pretrained cfg whose module names exist in the model.

Models are built on the meta device (no memory, no init compute), so this covers the full-size variants too.
"""
import pytest
import timm
import torch
from timm.models import _registry

import visionzoo  # noqa: F401

OURS = sorted(n for n in timm.list_models() if _registry._model_entrypoints[n].__module__.startswith('visionzoo.'))
REQUIRED = ('input_size', 'crop_pct', 'interpolation', 'mean', 'std', 'first_conv', 'classifier', 'num_classes')


def test_every_family_is_registered():
    prefixes = {name.split('_')[0] for name in OURS}
    assert {'vim', 'van', 'slab', 'biformer'} <= prefixes, prefixes


@pytest.mark.parametrize('name', OURS)
def test_pretrained_cfg_is_complete_and_names_real_modules(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    missing = [k for k in REQUIRED if cfg.get(k) is None]
    assert not missing, f'{name}: pretrained cfg lacks {missing}'
    assert len(cfg['input_size']) == 3 and len(cfg['mean']) == len(cfg['std']) == 3
    assert 0 < cfg['crop_pct'] <= 1 and cfg['interpolation'] in ('bicubic', 'bilinear', 'nearest')
    first = model.get_submodule(cfg['first_conv'])
    assert getattr(first, 'in_channels', 3) == 3
    for classifier in (cfg['classifier'],) if isinstance(cfg['classifier'], str) else cfg['classifier']:
        assert model.get_submodule(classifier).out_features == cfg['num_classes'] == 1000
    # a tagged cfg ('van_b0.in1k') stands for released weights: it must say where they are
    if cfg.get('tag'):
        assert cfg.get('hf_hub_id') or cfg.get('url'), f'{name}.{cfg["tag"]}: no hf_hub_id or url'
    assert model.num_features > 0 and model.feature_info
