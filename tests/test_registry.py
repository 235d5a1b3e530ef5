"""Every type registered in a visionzoo registry builds from a config."""
import os
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import visionzoo  # noqa: F401
from visionzoo.registry import (ALL_REGISTRIES, DATA_SAMPLERS, DATASETS, FUNCTIONS, HOOKS, LOOPS, METRICS, MODELS,
                                OPTIM_WRAPPERS, TRANSFORMS)


def _ade_folder(tmp_path):
    """A one-image ADEChallengeData2016 layout."""
    for sub, ext, img in (('images', '.jpg', np.zeros((4, 4, 3), np.uint8)),
                          ('annotations', '.png', np.ones((4, 4), np.uint8))):
        os.makedirs(os.path.join(tmp_path, sub, 'validation'), exist_ok=True)
        cv2.imwrite(os.path.join(tmp_path, sub, 'validation', 'a' + ext), img)
    return str(tmp_path)


def _imagenet_folder(root):
    """A one-image ImageNet val/ folder."""
    (root / 'val' / 'n01440764').mkdir(parents=True)
    cv2.imwrite(str(root / 'val' / 'n01440764' / 'a.png'), np.zeros((8, 8, 3), np.uint8))
    return str(root)


def _build_args(tiny_shapes, tmp_path):
    """Config (without ``type``) for every registered type; a new type must be added here to be tested."""
    model = torch.nn.Linear(2, 2)
    eval_runner = SimpleNamespace(build_evaluator=lambda e: e)
    det_backbone = dict(type='TimmBackbone', model_name='resnet10t', out_indices=(2, 3, 4))
    return {
        (MODELS, 'ImageClassifier'): dict(backbone=dict(model_name='resnet10t'),
                                          head=dict(type='LinearClsHead', num_classes=3)),
        (MODELS, 'LinearClsHead'): dict(num_classes=3, in_channels=8),
        (MODELS, 'TimmBackbone'): dict(model_name='vim_tiny', depth=2, out_indices=(1,), img_size=32),
        (MODELS, 'SimpleFeaturePyramid'): dict(in_channels=192, out_channels=16),
        (MODELS, 'FPN'): dict(in_channels=[8, 16], out_channels=8, num_outs=3),
        (MODELS, 'PAFPN'): dict(in_channels=[8, 16], out_channels=8, num_outs=3, add_extra_convs='on_output'),
        (MODELS, 'EfficientViTFPN'): dict(in_channels=[8, 16, 24], out_channels=8, num_outs=5),
        (MODELS, 'DetDataPreprocessor'): dict(),
        (MODELS, 'UPerHead'): dict(in_channels=[8, 16], in_index=[0, 1], channels=8, num_classes=3),
        (MODELS, 'FPNHead'): dict(in_channels=[8, 16], in_index=[0, 1], feature_strides=[4, 8], channels=8,
                                  num_classes=3),
        (MODELS, 'FCNHead'): dict(in_channels=8, channels=8, num_classes=3),
        (MODELS, 'CrossEntropyLoss'): dict(avg_non_ignore=True),
        (MODELS, 'SegDataPreprocessor'): dict(size_divisor=32),
        (MODELS, 'EncoderDecoder'): dict(backbone=dict(det_backbone, out_indices=(3, 4)),
                                         decode_head=dict(type='FCNHead', in_channels=512, channels=8, num_classes=3)),
        (MODELS, 'RetinaHead'): dict(num_classes=3, in_channels=8),
        (MODELS, 'FCOSHead'): dict(num_classes=3, in_channels=32),  # GroupNorm(32, C) in its convs
        (MODELS, 'RPNHead'): dict(in_channels=8),
        (MODELS, 'StandardRoIHead'): dict(num_classes=3, in_channels=8, fc_channels=16, mask_channels=8),
        (MODELS, 'RetinaNet'): dict(backbone=det_backbone, neck=dict(type='FPN', out_channels=8, num_outs=5,
                                                                     add_extra_convs='on_input'),
                                    bbox_head=dict(type='RetinaHead', num_classes=3, in_channels=8)),
        (MODELS, 'FCOS'): dict(backbone=det_backbone, neck=dict(type='FPN', out_channels=32, num_outs=5,
                                                                add_extra_convs='on_output'),
                               bbox_head=dict(type='FCOSHead', num_classes=3, in_channels=32)),
        (MODELS, 'MaskRCNN'): dict(backbone=dict(det_backbone, out_indices=(1, 2, 3, 4)),
                                   neck=dict(type='FPN', out_channels=8, num_outs=5),
                                   rpn_head=dict(type='RPNHead', in_channels=8),
                                   roi_head=dict(type='StandardRoIHead', num_classes=3, in_channels=8, fc_channels=16,
                                                 mask_channels=8)),
        (DATASETS, 'ImageFolderDataset'): dict(data_root=tiny_shapes['cls_val']),
        (DATASETS, 'ShapesClsDataset'): dict(split='val', data_root=tiny_shapes['data_root'],
                                             shapes_cfg=_tiny_cfg()),
        (TRANSFORMS, 'TimmTransform'): dict(input_size=32),
        (DATASETS, 'CocoDataset'): dict(ann_file=tiny_shapes['det_val_ann'],
                                        data_prefix=dict(img=tiny_shapes['det_val_img'])),
        (DATASETS, 'ShapesDetDataset'): dict(split='val', data_root=tiny_shapes['data_root'], shapes_cfg=_tiny_cfg()),
        (TRANSFORMS, 'LoadImageFromFile'): dict(),
        (TRANSFORMS, 'LoadAnnotations'): dict(with_mask=True),
        (TRANSFORMS, 'Resize'): dict(scale=(64, 48)),
        (TRANSFORMS, 'RandomFlip'): dict(prob=0.5),
        (TRANSFORMS, 'PackDetInputs'): dict(),
        (DATA_SAMPLERS, 'AspectRatioBatchSampler'): dict(sampler=SimpleNamespace(dataset=DATASETS.build(dict(
            type='ShapesDetDataset', split='val', data_root=tiny_shapes['data_root'], shapes_cfg=_tiny_cfg()))),
            batch_size=2),
        (METRICS, 'CocoMetric'): dict(metric=['bbox', 'segm']),
        (FUNCTIONS, 'det_collate'): dict(),
        (METRICS, 'Accuracy'): dict(),
        (METRICS, 'DumpPredictions'): dict(out_file=str(tmp_path / 'preds.json')),
        (METRICS, 'DumpSegMaps'): dict(out_dir=str(tmp_path / 'seg_maps')),
        (METRICS, 'IoUMetric'): dict(iou_metrics=['mIoU', 'mDice']),
        (DATASETS, 'ShapesSegDataset'): dict(split='val', data_root=tiny_shapes['data_root'], shapes_cfg=_tiny_cfg()),
        (DATASETS, 'SegDataset'): dict(data_prefix=dict(img_path=tiny_shapes['det_val_img'], seg_map_path=None),
                                       img_suffix='.png', metainfo=dict(classes=('a', 'b'))),
        (DATASETS, 'ADE20KDataset'): dict(data_root=_ade_folder(tmp_path / 'ade'),
                                          data_prefix=dict(img_path='images/validation',
                                                           seg_map_path='annotations/validation')),
        (TRANSFORMS, 'RandomResize'): dict(scale=(64, 32), ratio_range=(0.5, 2.0)),
        (TRANSFORMS, 'RandomCrop'): dict(crop_size=(32, 32), cat_max_ratio=0.75),
        (TRANSFORMS, 'PhotoMetricDistortion'): dict(),
        (TRANSFORMS, 'PackSegInputs'): dict(),
        (DATASETS, 'ImageNetDataset'): dict(data_root=_imagenet_folder(tmp_path / 'imagenet'), synsets=['n01440764']),
        (TRANSFORMS, 'ModelEvalTransform'): dict(model_name='van_b0'),
        (MODELS, 'Feature2Pyramid'): dict(embed_dim=8, rescales=[4, 2, 1, 0.5], norm_cfg='BN'),
        (HOOKS, 'EvalProgressHook'): dict(),
        (HOOKS, 'MetricTableHook'): dict(),
        (HOOKS, 'PredictionDrawHook'): dict(show_dir=str(tmp_path / 'show')),
        (HOOKS, 'CheckpointHook'): dict(interval=1, max_keep_ckpts=2),
        (HOOKS, 'CheckpointKeysHook'): dict(ignore_keys=['head\\.']),
        (LOOPS, 'EpochBasedTrainLoop'): dict(runner=SimpleNamespace(visualizer=SimpleNamespace()),
                                             dataloader=torch.utils.data.DataLoader(list(range(4))), max_epochs=2),
        (LOOPS, 'ValLoop'): dict(runner=eval_runner, dataloader=torch.utils.data.DataLoader(list(range(4))),
                                 evaluator=[]),
        (LOOPS, 'TestLoop'): dict(runner=eval_runner, dataloader=torch.utils.data.DataLoader(list(range(4))),
                                  evaluator=[]),
        (OPTIM_WRAPPERS, 'CPUAmpOptimWrapper'): dict(optimizer=torch.optim.SGD(model.parameters(), lr=0.1)),
        (OPTIM_WRAPPERS, 'GuardedOptimWrapper'): dict(optimizer=torch.optim.SGD(model.parameters(), lr=0.1)),
        (OPTIM_WRAPPERS, 'GuardedAmpOptimWrapper'): dict(optimizer=torch.optim.SGD(model.parameters(), lr=0.1)),
    }


def _tiny_cfg():
    from conftest import TINY_SHAPES
    return TINY_SHAPES


def test_every_registered_type_builds(tiny_shapes, tmp_path):
    args = _build_args(tiny_shapes, tmp_path)
    registered = {(reg, name) for reg in ALL_REGISTRIES.values() for name in reg.module_dict}
    untested = sorted(f'{reg.name}:{name}' for reg, name in registered - set(args))
    assert not untested, f'registered types without a build case in tests/test_registry.py: {untested}'
    for (reg, name), kwargs in args.items():
        if reg is FUNCTIONS:  # functions are looked up, not built
            assert reg.get(name) is not None and reg.get(name).__name__ == name
            continue
        if name == 'GuardedAmpOptimWrapper' and not torch.cuda.is_available():  # mmengine's AMP wrapper needs CUDA
            with pytest.raises(AssertionError, match='only available training on gpu'):
                reg.build(dict(type=name, **kwargs))
            continue
        obj = reg.build(dict(type=name, **kwargs))
        assert type(obj).__name__ == name


def test_built_classifier_and_dataset_work_together(tiny_shapes):
    ds = DATASETS.build(dict(type='ImageFolderDataset', data_root=tiny_shapes['cls_val'],
                             pipeline=dict(type='TimmTransform', input_size=32)))
    assert ds.metainfo['classes'] == tuple(tiny_shapes['classes'])
    model = MODELS.build(dict(type='ImageClassifier', backbone=dict(model_name='resnet10t'),
                              head=dict(type='LinearClsHead', num_classes=len(ds.metainfo['classes']))))
    batch = torch.stack([ds[i]['inputs'] for i in range(4)])
    labels = torch.tensor([ds[i]['data_samples']['gt_label'] for i in range(4)])
    loss = model(batch, dict(gt_label=labels), mode='loss')['loss']
    assert loss.ndim == 0 and torch.isfinite(loss)
    preds = model(batch, dict(gt_label=labels, img_path=['a'] * 4), mode='predict')
    assert len(preds) == 4 and set(preds[0]) == {'pred_score', 'pred_label', 'gt_label', 'img_path'}
    assert torch.allclose(preds[0]['pred_score'].sum(), torch.tensor(1.0))


@pytest.mark.parametrize('name', ['ImageClasifier', 'LinearHead'])
def test_unknown_type_names_close_matches(name):
    from mmengine.config import Config

    from visionzoo.engine.config import check_types
    from visionzoo.utils.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        check_types(Config(dict(model=dict(type=name))), 'my.py')
    msg = str(e.value)
    assert 'my.py' in msg and 'model.type' in msg and name in msg
    assert 'ImageClassifier' in msg or 'LinearClsHead' in msg
