"""Config files load, inherit, take --cfg-options, and name what is wrong when they cannot."""
import glob
import os
import warnings

import pytest

import visionzoo  # noqa: F401
from conftest import ROOT
from visionzoo.engine.config import ConfigWarning, check_types, load_config, parse_cfg_options
from visionzoo.utils.errors import ConfigError

CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p)


def test_there_are_configs():
    assert any('demo_shapes' in p for p in CONFIGS)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_loads_and_every_type_is_registered(path):
    cfg = load_config(path)
    assert cfg.default_scope == 'visionzoo'
    for key in ('model', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'optim_wrapper', 'train_cfg'):
        assert key in cfg, key
    # also every argument name and schedule value (issue 19); no top-level key looks like a misspelling
    with warnings.catch_warnings():
        warnings.simplefilter('error', ConfigWarning)
        check_types(cfg, path)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_model_builds(path):
    from visionzoo.registry import MODELS
    cfg = load_config(path)
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_cfg_options_override_nested_keys_and_lists():
    path = os.path.join(ROOT, 'configs', 'classification', 'demo_shapes_resnet10t.py')
    opts = parse_cfg_options(['train_cfg.max_epochs=2', 'optim_wrapper.optimizer.lr=0.01',
                              'model.backbone.model_name=resnet18', 'val_evaluator.topk=[1,3]',
                              'train_dataloader.dataset.pipeline.scale=(0.2,1.0)', 'model.head.dropout=0.1'])
    cfg = load_config(path, opts)
    assert cfg.train_cfg.max_epochs == 2
    assert cfg.optim_wrapper.optimizer.lr == 0.01
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'  # siblings survive the merge
    assert cfg.model.backbone.model_name == 'resnet18'
    assert cfg.val_evaluator.topk == [1, 3]
    assert cfg.train_dataloader.dataset.pipeline.scale == (0.2, 1.0)
    assert cfg.model.head.dropout == 0.1


@pytest.mark.parametrize('pair', ['max_epochs', '=3', 'a..b=1', 'a b=1', 'x.=1', 'lr=[1,2', "name='abc"])
def test_malformed_cfg_option_is_rejected(pair):
    with pytest.raises(ConfigError) as e:
        parse_cfg_options([pair])
    assert '--cfg-options' in str(e.value)


def test_values_are_typed_like_mmengine():
    assert parse_cfg_options(['a=1', 'b=0.5', 'c=True', 'd=None', 'e=resnet', 'f=[1,[2,3]]']) == \
        dict(a=1, b=0.5, c=True, d=None, e='resnet', f=[1, [2, 3]])


def test_missing_config_file():
    with pytest.raises(ConfigError, match='config file not found: .*nope.py'):
        load_config('configs/nope.py')


def test_broken_config_names_the_file(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('model = dict(type=\n')
    with pytest.raises(ConfigError, match='bad.py'):
        load_config(str(bad))
    missing_base = tmp_path / 'child.py'
    missing_base.write_text("_base_ = ['./does_not_exist.py']\n")
    with pytest.raises(ConfigError, match='child.py'):
        load_config(str(missing_base))
