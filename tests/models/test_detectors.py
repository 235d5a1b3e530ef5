"""Detectors: anchors, RoI pooling, batching, training on a tiny set, prediction packing.

Non-finite losses are refused by the optimizer wrapper: tests/engine/test_nonfinite.py."""
import math

import pytest
import torch
from mmengine.optim import OptimWrapper
from torchvision.ops import MultiScaleRoIAlign, roi_align

import visionzoo  # noqa: F401  (registers everything)
from visionzoo.heads.dense_heads import AnchorGenerator
from visionzoo.heads.roi_heads import MultiLevelRoIAlign, map_roi_levels
from visionzoo.models.detectors import BaseDetector
from visionzoo.registry import MODELS
from visionzoo.utils.errors import ArgumentError

# timm feature indices: a ResNet's 0 is the stride-2 stem, so (2, 3, 4) are strides 8/16/32
TINY_BACKBONE = dict(type='TimmBackbone', model_name='resnet10t', out_indices=(2, 3, 4))
TINY_NECK = dict(type='FPN', out_channels=32, num_outs=5, add_extra_convs='on_input')
DETECTORS = {
    'RetinaNet': dict(type='RetinaNet', backbone=TINY_BACKBONE, neck=TINY_NECK,
                      bbox_head=dict(type='RetinaHead', num_classes=3, in_channels=32)),
    'FCOS': dict(type='FCOS', backbone=TINY_BACKBONE, neck=dict(TINY_NECK, add_extra_convs='on_output'),
                 bbox_head=dict(type='FCOSHead', num_classes=3, in_channels=32, num_convs=2)),
    'MaskRCNN': dict(type='MaskRCNN', backbone=dict(TINY_BACKBONE, out_indices=(1, 2, 3, 4)),
                     neck=dict(type='FPN', out_channels=32, num_outs=5),
                     rpn_head=dict(type='RPNHead', in_channels=32),
                     roi_head=dict(type='StandardRoIHead', num_classes=3, in_channels=32, fc_channels=64,
                                   mask_channels=32, num_mask_convs=2, train_cfg=dict(num=64))),
}


DETECTOR_LOSSES = {
    'RetinaNet': ('loss_cls', 'loss_bbox'),
    'FCOS': ('loss_cls', 'loss_bbox', 'loss_centerness'),
    'MaskRCNN': ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'),
}


def _tiny_set(n=2, size=96, seed=0):
    """Images with bright rectangles on noise, their boxes, labels and masks (contract items, unbatched)."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(n):
        img = torch.randint(0, 60, (3, size, size), generator=g, dtype=torch.uint8)
        boxes, labels = [], []
        masks = torch.zeros(3, size, size, dtype=torch.uint8)
        for k in range(3):
            w, h = (int(v) for v in torch.randint(16, 40, (2,), generator=g))
            x, y = (int(v) for v in torch.randint(0, size - 40, (2,), generator=g))
            img[k, y:y + h, x:x + w] = 255
            masks[k, y:y + h, x:x + w] = 1
            boxes.append([x, y, x + w, y + h])
            labels.append(k)
        inputs.append(img)
        samples.append(dict(img_id=i, img_path=f'{i}.png', ori_shape=(size, size), img_shape=(size, size),
                            scale_factor=(1.0, 1.0), flip=False, gt_bboxes=torch.tensor(boxes, dtype=torch.float32),
                            gt_labels=torch.tensor(labels), gt_masks=masks))
    return dict(inputs=inputs, data_samples=samples)


def test_anchors_follow_mmdet_formula():
    gen = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3)
    assert gen.num_anchors_per_location() == [9, 9]
    levels = gen.grid_anchors([(2, 3), (1, 2)], 'cpu')
    assert [tuple(a.shape) for a in levels] == [(2 * 3 * 9, 4), (1 * 2 * 9, 4)]
    # written out: location (y=1, x=2) of level 0, ratio 2.0 (h/w), third scale
    scale = 4 * 2 ** (2 / 3) * 8
    w, h = scale / math.sqrt(2.0), scale * math.sqrt(2.0)
    cx, cy = 2 * 8, 1 * 8
    anchor = levels[0][(1 * 3 + 2) * 9 + 2 * 3 + 2]
    torch.testing.assert_close(anchor, torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
    # FCOS points: cell centres, stride-sized
    points = AnchorGenerator([8], scales=[1.0], center_offset=0.5).grid_anchors([(1, 2)], 'cpu')[0]
    torch.testing.assert_close(points, torch.tensor([[0., 0., 8., 8.], [8., 0., 16., 8.]]))


def test_anchors_agree_with_torchvision_where_its_strides_are_exact():
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
    from torchvision.models.detection.image_list import ImageList
    feats = [torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4)]
    ours = AnchorGenerator([8, 16], ratios=[0.5, 1.0, 2.0], scales=[4.0])
    tv = TVAnchorGenerator(sizes=((32,), (64,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2)
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    # torchvision rounds its base anchors to integers; ours keep mmdet's exact sizes
    torch.testing.assert_close(ours(images, feats)[0], tv(images, feats)[0], atol=0.5, rtol=0)


@pytest.mark.parametrize('name,arg', [('RetinaNet', r'bbox_head\.anchor_generator\.strides=\[8, 16, 32, 64, 128\]'),
                                      ('MaskRCNN', r'rpn_head\.anchor_generator\.strides=\[4, 8, 16, 32, 64\]')])
def test_features_at_other_strides_than_the_anchors_are_refused(name, arg):
    """An ArgumentError (not a config error: the model knows no config) naming the detector and its strides."""
    wrong = (1, 2, 3) if name == 'RetinaNet' else (0, 1, 2, 3)  # one level finer than the anchors expect
    model = MODELS.build(dict(DETECTORS[name], backbone=dict(TINY_BACKBONE, out_indices=wrong)))
    data = model.data_preprocessor(_tiny_set(n=1))
    expected = 24 if name == 'RetinaNet' else 48
    with pytest.raises(ArgumentError, match=rf'^{name}\({arg}\): feature level 0 is {expected}x{expected} for a '
                       rf'96x96 input, i.e. stride ~{96 // expected}, but the head expects stride .*out_indices'):
        model(**data, mode='loss')
    model.eval()
    with pytest.raises(ArgumentError, match=rf'^{name}\({arg}\): feature level 0'):
        model(**data, mode='predict')


def test_anchor_config_errors():
    with pytest.raises(ArgumentError, match=r'^AnchorGenerator\(scales=None, octave_base_scale=None, '
                       r'scales_per_octave=None\): give either scales or octave_base_scale'):
        AnchorGenerator([8])
    with pytest.raises(ArgumentError, match=r'^AnchorGenerator\(ratios=\[0\.0\]\): expected a list of positive '):
        AnchorGenerator([8], ratios=[0.0], scales=[1.0])
    gen = AnchorGenerator([8, 16], scales=[1.0])
    with pytest.raises(ArgumentError, match=r'^AnchorGenerator\(strides=\[8, 16\]\): 1 feature levels but 2 '
                       r'strides; .*num_outs'):
        gen.grid_anchors([(2, 2)], 'cpu')


def test_head_and_detector_argument_errors():
    with pytest.raises(ArgumentError, match=r'^FCOSHead\(num_classes=0\): expected a positive int$'):
        MODELS.build(dict(type='FCOSHead', num_classes=0, in_channels=32))
    with pytest.raises(ArgumentError, match=r'^FCOSHead\(in_channels=48\): expected a multiple of 32'):
        MODELS.build(dict(type='FCOSHead', num_classes=2, in_channels=48))
    with pytest.raises(ArgumentError, match=r"^RetinaHead\(norm='BN'\): expected None or one of \['GN'\]"):
        MODELS.build(dict(type='RetinaHead', num_classes=2, in_channels=32, norm='BN'))
    with pytest.raises(ArgumentError, match=r"^RetinaHead\(norm='GN'\): GroupNorm num_groups=32 must divide the 48 "):
        MODELS.build(dict(type='RetinaHead', num_classes=2, in_channels=48, norm='GN'))
    with pytest.raises(ArgumentError, match=r"^StandardRoIHead\(train_cfg=\{'nums': 64\}\): unknown option\(s\) "
                       r"\['nums'\]"):
        MODELS.build(dict(DETECTORS['MaskRCNN']['roi_head'], train_cfg=dict(nums=64)))
    with pytest.raises(ArgumentError, match=r"^RetinaNet\(test_cfg=\{'nms_thr': 0\.5\}\): unknown option"):
        MODELS.build(dict(DETECTORS['RetinaNet'], test_cfg=dict(nms_thr=0.5)))
    with pytest.raises(ArgumentError, match=r'^MaskRCNN\(train_cfg\.rpn_proposal\.nms_iou=0\.6, '
                       r'test_cfg\.rpn\.nms_iou=0\.7\): must be equal'):
        MODELS.build(dict(DETECTORS['MaskRCNN'], train_cfg=dict(rpn_proposal=dict(nms_iou=0.6))))
    with pytest.raises(ArgumentError, match=r"^MaskRCNN\(train_cfg\.rpn=\{'pos_iou': 0\.7\}\): unknown option"):
        MODELS.build(dict(DETECTORS['MaskRCNN'], train_cfg=dict(rpn=dict(pos_iou=0.7))))


def test_retina_head_group_norm_spellings_match_torchvision_v2():
    """norm='GN' and dict(type='GN') give torchvision's RetinaNet v2 head: same keys and shapes, GroupNorm(32)."""
    from functools import partial

    from torchvision.models.detection.retinanet import RetinaNetHead
    reference = RetinaNetHead(64, 9, 3, norm_layer=partial(torch.nn.GroupNorm, 32))
    layout = [(k, tuple(v.shape)) for k, v in reference.state_dict().items()]
    for norm in ('GN', dict(type='GN', num_groups=32)):
        head = MODELS.build(dict(type='RetinaHead', num_classes=3, in_channels=64, norm=norm))
        assert [(k, tuple(v.shape)) for k, v in head.state_dict().items()] == layout
        norms = [m for m in head.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert len(norms) == 8 and all(m.num_groups == 32 and m.eps == 1e-5 for m in norms)
    eps = MODELS.build(dict(type='RetinaHead', num_classes=3, in_channels=64, norm=dict(type='GN', num_groups=16,
                                                                                         eps=1e-6)))
    assert all(m.num_groups == 16 and m.eps == 1e-6 for m in eps.modules() if isinstance(m, torch.nn.GroupNorm))


def test_roi_levels_and_pooling():
    boxes = torch.tensor([[0., 0., 50., 50.], [0., 0., 111., 111.], [0., 0., 112., 112.], [0., 0., 300., 300.],
                          [0., 0., 1000., 1000.]])
    assert map_roi_levels(boxes, 4).tolist() == [0, 0, 1, 2, 3]
    g = torch.Generator().manual_seed(0)
    feats = {str(i): torch.randn(2, 4, 64 // 2 ** i, 64 // 2 ** i, generator=g) for i in range(4)}
    per_image = [torch.tensor([[3., 4., 40., 30.], [0., 0., 63., 63.]]), torch.tensor([[10., 10., 20., 24.]])]
    pooled = MultiLevelRoIAlign(7, [1, 2, 4, 8], sampling_ratio=2, finest_scale=16)(feats, per_image, [(64, 64)] * 2)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(per_image)])
    levels = map_roi_levels(rois[:, 1:], 4, 16)
    for r in range(len(rois)):
        lvl = int(levels[r])
        ref = roi_align(feats[str(lvl)], rois[r:r + 1], 7, 1.0 / 2 ** lvl, 2, aligned=True)
        torch.testing.assert_close(pooled[r:r + 1], ref)
    # with aligned=False and torchvision's level rule (same as finest_scale=56 with canonical 224 at level 4)
    feats4 = {str(i): torch.randn(1, 2, 128 // 2 ** i, 128 // 2 ** i, generator=g) for i in range(4)}
    boxes = [torch.tensor([[0., 0., 100., 100.], [5., 5., 60., 30.], [0., 0., 127., 127.], [20., 30., 50., 90.]])]
    ours = MultiLevelRoIAlign(7, [4, 8, 16, 32], sampling_ratio=2, aligned=False)(feats4, boxes, [(512, 512)])
    tv = MultiScaleRoIAlign(['0', '1', '2', '3'], 7, 2)(feats4, boxes, [(512, 512)])
    torch.testing.assert_close(ours, tv)


def test_data_preprocessor_normalises_and_pads():
    pre = MODELS.build(dict(type='DetDataPreprocessor', mean=[10., 20., 30.], std=[2., 4., 5.], pad_size_divisor=32))
    a = torch.full((3, 40, 50), 50, dtype=torch.uint8)
    b = torch.full((3, 70, 20), 90, dtype=torch.uint8)
    out = pre(dict(inputs=[a, b], data_samples=[dict(), dict()]))
    x = out['inputs']
    assert x.shape == (2, 3, 96, 64) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([20., 7.5, 4.]))
    torch.testing.assert_close(x[1, :, 69, 19], torch.tensor([40., 17.5, 12.]))
    assert float(x[0, :, 40:].abs().sum()) == 0 and float(x[1, :, :, 20:].abs().sum()) == 0
    assert [s['batch_input_shape'] for s in out['data_samples']] == [(96, 64)] * 2
    with pytest.raises(ArgumentError, match=r'^DetDataPreprocessor\(pad_size_divisor=0\): expected a positive int'):
        MODELS.build(dict(type='DetDataPreprocessor', pad_size_divisor=0))


@pytest.mark.parametrize('name', list(DETECTORS))
def test_each_loss_decreases_on_a_tiny_set(name):
    torch.manual_seed(0)
    model = MODELS.build(DETECTORS[name])
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    data = _tiny_set()

    def losses():  # the same batch, no update: the change comes from training alone
        torch.manual_seed(1)  # the RoI samplers of Mask R-CNN draw at random
        with torch.no_grad():
            return {k: float(v) for k, v in model(**model.data_preprocessor(data, True), mode='loss').items()}

    before = losses()
    # RetinaNet's anchor classifier starts from the 0.01 prior and needs more steps (a larger rate diverges)
    for _ in range(60 if name == 'RetinaNet' else 30):
        model.train_step({k: list(v) for k, v in data.items()}, wrapper)
    after = losses()
    assert set(before) == set(after) == set(DETECTOR_LOSSES[name])
    for key in before:
        # every term falls (centerness has a floor, the entropy of its soft targets; RetinaNet's classifier is slow)
        assert math.isfinite(after[key]) and after[key] < 0.98 * before[key], (name, key, before[key], after[key])
    assert sum(after.values()) < 0.9 * sum(before.values()), (name, before, after)
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(data), mode='predict')
    assert len(preds) == 2
    for p in preds:
        assert {'img_id', 'img_path', 'ori_shape', 'pred_bboxes', 'pred_scores', 'pred_labels'} <= set(p)
        assert p['pred_bboxes'].shape[1:] == (4,) and len(p['pred_scores']) == len(p['pred_labels'])
        assert bool((p['pred_scores'][:-1] >= p['pred_scores'][1:]).all())
        if name == 'MaskRCNN':
            assert p['pred_masks'].shape[1:] == (96, 96) and p['pred_masks'].dtype == torch.bool


def test_predictions_are_mapped_back_to_the_original_image():
    det = dict(boxes=torch.tensor([[10., 20., 30., 60.]]), scores=torch.tensor([0.9]), labels=torch.tensor([2]))
    sample = dict(img_id=7, img_path='a.png', ori_shape=(200, 100), img_shape=(100, 50), scale_factor=(0.5, 0.5),
                  flip=True, flip_direction='horizontal')
    pred = BaseDetector._pack([det], [sample], label_offset=1)[0]
    # unflip in the 50-pixel-wide input: x in [20, 40]; then undo the 0.5 scale
    torch.testing.assert_close(pred['pred_bboxes'], torch.tensor([[40., 40., 80., 120.]]))
    assert pred['pred_labels'].tolist() == [1] and pred['img_id'] == 7 and pred['ori_shape'] == (200, 100)
    sample.update(flip=False, ori_shape=(50, 50))
    clipped = BaseDetector._pack([det], [sample])[0]['pred_bboxes']
    torch.testing.assert_close(clipped, torch.tensor([[20., 40., 50., 50.]]))


def test_predict_needs_eval_mode_and_masks_need_annotations():
    model = MODELS.build(DETECTORS['MaskRCNN'])
    data = model.data_preprocessor(_tiny_set(n=1))
    with pytest.raises(RuntimeError, match='eval'):
        model(**data, mode='predict')
    del data['data_samples'][0]['gt_masks']
    with pytest.raises(ArgumentError, match=r'^MaskRCNN\(roi_head\.with_mask=True\): the mask head needs gt_masks'
                       r'.*LoadAnnotations\(with_mask=True\)'):
        model(**data, mode='loss')
