"""Error reports: the config path in front of model argument errors, one line without registry wrappers."""
import pytest
from mmengine.config import Config

from visionzoo.engine.reporting import config_paths_in_errors, format_error, type_paths
from visionzoo.utils.errors import ArgumentError, CheckpointError, DatasetError

CFG = Config(dict(model=dict(type='FCOS', backbone=dict(type='TimmBackbone', model_name='resnet10t'),
                             neck=dict(type='FPN', out_channels=8),
                             bbox_head=dict(type='visionzoo.FCOSHead', num_classes=3)),
                  train_dataloader=dict(dataset=dict(type='CocoDataset')),
                  val_dataloader=dict(dataset=dict(type='CocoDataset')),
                  custom_hooks=[dict(type='MetricTableHook'), dict(type='FPN')]))


def _raised(exc):
    with pytest.raises(type(exc)) as info:
        with config_paths_in_errors(CFG, 'configs/x.py'):
            raise exc
    return info.value


def test_argument_error_gets_config_file_and_the_one_path_of_its_type():
    assert type_paths(CFG, 'FCOSHead') == ['model.bbox_head']
    err = _raised(ArgumentError('FCOSHead(num_classes=0): expected a positive int'))
    assert str(err) == 'configs/x.py: model.bbox_head: FCOSHead(num_classes=0): expected a positive int'
    assert isinstance(err.__cause__, ArgumentError)
    # a registry's "class `X` in module: " wrappers are removed first
    err = _raised(ArgumentError('class `FCOS` in visionzoo/models/detectors.py: class `TimmBackbone` in '
                                'visionzoo/backbones/timm_backbone.py: TimmBackbone(out_indices=(9,)): out of range'))
    assert str(err) == 'configs/x.py: model.backbone: TimmBackbone(out_indices=(9,)): out of range'


def test_ambiguous_or_unknown_type_gets_the_config_file_only():
    assert str(_raised(ArgumentError('FPN(num_outs=0): expected a positive int'))) == \
        'configs/x.py: FPN(num_outs=0): expected a positive int'  # model.neck and custom_hooks.1
    assert str(_raised(DatasetError('CocoDataset(ann_file=None): expected a file'))) == \
        'configs/x.py: CocoDataset(ann_file=None): expected a file'  # train and val datasets
    assert str(_raised(ArgumentError('VisualAttentionNetwork(depths=()): expected 4 stages'))) == \
        'configs/x.py: VisualAttentionNetwork(depths=()): expected 4 stages'


def test_other_errors_pass_unchanged():
    err = CheckpointError('w.pth: weights do not fit the model built from the config')
    assert _raised(err) is err
    with pytest.raises(KeyError):
        with config_paths_in_errors(CFG, 'configs/x.py'):
            raise KeyError('FCOSHead(')


def test_format_error_keeps_the_last_line_of_a_worker_error():
    msg = ('Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n'
           '  File "x.py", line 1\nvisionzoo.utils.errors.DatasetError: a.json: image 3 missing.png not found\n')
    assert format_error(DatasetError(msg)) == 'a.json: image 3 missing.png not found'
