"""Well-formed options with bad content (issue 19, defect 5): one clear line naming the config path and the
accepted names, before anything is built; a misspelled top-level key is a warning with close matches."""
import os
import re
import warnings

import pytest

import visionzoo  # noqa: F401
from conftest import ROOT, run_tool, tiny_cls_config
from test_tools import _assert_one_clear_error
from visionzoo.engine.config import (ConfigWarning, check_types, load_config, parse_cfg_options,
                                     timm_model_arguments)
from visionzoo.engine.runner_utils import setup_train_cfg
from visionzoo.utils.errors import ConfigError

CLS = os.path.join(ROOT, 'configs', 'classification', 'demo_shapes_resnet10t.py')
FCOS = os.path.join(ROOT, 'configs', 'fcos', 'fcos_efficientvit-m0_fpn_shapes-demo.py')


def _checked(path, tmp_path, *options):
    """The config as tools/train.py checks it: options merged, the train flags applied, then the config check."""
    cfg = load_config(path, parse_cfg_options(list(options)))
    setup_train_cfg(cfg, str(tmp_path / 'work'), None, False, 'none', path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        check_types(cfg, path)
    return [w for w in caught if issubclass(w.category, ConfigWarning)]


@pytest.mark.parametrize('path, option, fragments', [
    # ImageClassifier's untyped backbone dict goes to timm.create_model('resnet10t', ...)
    (CLS, 'model.backbone.foo=1', [r"model\.backbone\.foo: timm model 'resnet10t' takes no argument 'foo'",
                                   r'accepted: .*drop_path_rate']),
    (CLS, 'model.head.num_clases=3', [r"model\.head\.num_clases: LinearClsHead takes no argument 'num_clases' "
                                      r'\(did you mean: num_classes\?\); accepted: .*in_channels']),
    (CLS, 'train_cfg.max_epochs=abc', [r"train_cfg\.max_epochs='abc': expected a positive int"]),
    (CLS, 'train_cfg.val_interval=0', [r'train_cfg\.val_interval=0: expected a positive int']),
    (CLS, 'optim_wrapper.optimizer.lr=-1', [r'optim_wrapper\.optimizer\.lr=-1: expected a positive number']),
    (CLS, 'train_dataloader.batch_szie=4', [r"train_dataloader\.batch_szie: DataLoader takes no argument "
                                            r"'batch_szie' \(did you mean: batch_size"]),
    (CLS, 'param_scheduler.0.start_factr=0.5', [r"param_scheduler\.0\.start_factr: LinearLR .*start_factor"]),
    # TimmBackbone forwards **model_kwargs to the timm model: checked against EfficientVitMsra's arguments
    (FCOS, 'model.backbone.img_sise=64', [r"model\.backbone\.img_sise: TimmBackbone takes no argument 'img_sise' "
                                          r'\(did you mean: img_size']),
    (FCOS, 'model.neck.out_chanels=8', [r"model\.neck\.out_chanels: \w*FPN takes no argument 'out_chanels' "
                                        r'\(did you mean: out_channels']),
], ids=lambda v: v if isinstance(v, str) and '=' in v else '')
def test_bad_option_is_one_config_error_with_close_matches(tmp_path, path, option, fragments):
    with pytest.raises(ConfigError) as e:
        _checked(path, tmp_path, option)
    msg = str(e.value)
    assert msg.startswith(f'{path}: ') and '\n' not in msg
    for frag in fragments:
        assert re.search(frag, msg), (frag, msg)


def test_every_problem_in_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        _checked(CLS, tmp_path, 'model.head.num_clases=3', 'train_cfg.max_epochs=abc', 'optim_wrapper.optimizer.lr=0')
    msg = str(e.value)
    assert '\n' not in msg and 'num_clases' in msg and 'max_epochs' in msg and 'lr=0' in msg


def test_good_options_pass(tmp_path):
    # forwarded and own arguments that the classes really take: no error, no warning
    assert _checked(CLS, tmp_path, 'model.backbone.drop_path_rate=0.1', 'model.head.dropout=0.1',
                    'train_dataloader.batch_size=4', 'optim_wrapper.optimizer.lr=1e-4', 'train_cfg.max_epochs=1',
                    'default_hooks.checkpoint.priority=VERY_LOW') == []
    assert _checked(FCOS, tmp_path, 'model.backbone.img_size=64', 'model.backbone.frozen_stages=1') == []


def test_timm_arguments_agree_with_timm():
    """What the check accepts or rejects for a timm model is what timm.create_model accepts or rejects."""
    import timm
    accepted = timm_model_arguments('resnet10t')
    assert {'drop_path_rate', 'stem_width', 'in_chans', 'output_stride'} <= accepted and 'foo' not in accepted
    timm.create_model('resnet10t', drop_path_rate=0.1, stem_width=16)
    with pytest.raises(TypeError, match='foo'):
        timm.create_model('resnet10t', foo=1)
    assert timm_model_arguments('no_such_model') is None


def test_misspelled_top_level_key_warns_with_close_matches(tmp_path):
    caught = _checked(CLS, tmp_path, 'trian_cfg.max_epochs=1')
    assert len(caught) == 1
    assert re.search(r"top-level key 'trian_cfg' is not read by anything \(did you mean: train_cfg",
                     str(caught[0].message))
    # the config's own helper variables (max_epochs, img_size, train_pipeline, ...) are not warned about
    assert _checked(CLS, tmp_path, 'my_helper=3', 'img_size=32') == []


def test_train_tool_reports_bad_options_in_one_line(tmp_path):
    # the data folder is never read: the options are rejected before anything is built
    cfg = tiny_cls_config(tmp_path, dict(data_root=str(tmp_path / 'data')))
    proc = run_tool('train.py', cfg, '--work-dir', tmp_path / 'w1', '--cfg-options', 'model.backbone.foo=1',
                    'train_cfg.max_epochs=abc', 'optim_wrapper.optimizer.lr=-1')
    _assert_one_clear_error(proc, re.escape(cfg), r"model\.backbone\.foo: timm model 'resnet10t'",
                            r"train_cfg\.max_epochs='abc': expected a positive int",
                            r'optim_wrapper\.optimizer\.lr=-1: expected a positive number')

    proc = run_tool('train.py', cfg, '--work-dir', tmp_path / 'w2', '--cfg-options', 'model.head.num_clases=3',
                    'trian_cfg.max_epochs=1')
    _assert_one_clear_error(proc, r'model\.head\.num_clases: .*did you mean: num_classes')
    assert re.search(r"ConfigWarning: top-level key 'trian_cfg' .*did you mean: train_cfg", proc.stderr)
