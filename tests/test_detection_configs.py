"""COCO detection configs (configs/retinanet, configs/mask_rcnn): the papers' 1x schedule, a model that builds, necks
fed with the backbones' channels at the strides the anchors assume, predictions in the data contract, training."""
import glob
import os
import re

import pytest
import torch
from mmengine.optim import build_optim_wrapper

import visionzoo  # noqa: F401  (registers everything)
from conftest import ROOT
from visionzoo.engine.config import load_config
from visionzoo.registry import MODELS

CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', 'retinanet', '*.py'))
                 + glob.glob(os.path.join(ROOT, 'configs', 'mask_rcnn', '*.py')))
_NAME = re.compile(r'^(retinanet|mask-rcnn)_(.+)_fpn_1x_coco\.py$')
# official optimizer settings that differ from the shared 1x recipe (AdamW, weight decay 0.05)
WEIGHT_DECAY = {'retinanet_biformer-small_fpn_1x_coco.py': 1e-4}  # that config follows WaveViT's optimizer
# images (h, w) of the predict batch: both pad to 128 x 128, so every pyramid level has an exact size
SIZES = ((96, 128), (128, 96))
MAX_DETS = 10


def _ids(path):
    return os.path.basename(path)


def _model_name(path):
    match = _NAME.match(os.path.basename(path))
    assert match, f'{path}: expected retinanet_<model>_fpn_1x_coco.py or mask-rcnn_<model>_fpn_1x_coco.py'
    return match.group(2)


def _samples(with_targets=False, seed=0):
    """Two contract items (uint8 RGB images and sample dicts); with targets: bright boxes with labels and masks."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i, (h, w) in enumerate(SIZES):
        img = torch.randint(0, 60, (3, h, w), generator=g, dtype=torch.uint8)
        sample = dict(img_id=i, img_path=f'{i}.jpg', ori_shape=(h, w), img_shape=(h, w), scale_factor=(1.0, 1.0),
                      flip=False)
        if with_targets:
            boxes, masks = [], torch.zeros(2, h, w, dtype=torch.uint8)
            for k, (x, y, bw, bh) in enumerate(((8, 10, 40, 50), (50, 30, 36, 44))):
                img[k, y:y + bh, x:x + bw] = 255
                masks[k, y:y + bh, x:x + bw] = 1
                boxes.append([x, y, x + bw, y + bh])
            sample.update(gt_bboxes=torch.tensor(boxes, dtype=torch.float32), gt_labels=torch.tensor([3, 17]),
                          gt_masks=masks)
        inputs.append(img)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _anchor_strides(model_cfg):
    head = model_cfg.bbox_head if model_cfg.type == 'RetinaNet' else model_cfg.rpn_head
    return list(head.anchor_generator.strides)


def test_every_model_has_both_detectors():
    names = {}
    for path in CONFIGS:
        names.setdefault(_model_name(path), []).append(os.path.basename(path).split('_')[0])
    assert len(names) >= 7, sorted(names)
    assert all(sorted(kinds) == ['mask-rcnn', 'retinanet'] for kinds in names.values()), names


@pytest.mark.parametrize('path', CONFIGS, ids=_ids)
def test_schedule_data_and_weights(path):
    cfg = load_config(path)
    name = os.path.basename(path)
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW'
    assert 1e-4 <= optimizer.lr <= 2e-4
    assert optimizer.weight_decay == WEIGHT_DECAY.get(name, 0.05)
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == 12
    steps = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR']
    assert len(steps) == 1 and list(steps[0].milestones) == [8, 11]
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'Resize']
    assert len(resize) == 1 and tuple(resize[0].scale) == (1333, 800) and resize[0].keep_ratio
    load = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'LoadAnnotations'][0]
    is_mask_rcnn = name.startswith('mask-rcnn_')
    assert cfg.model.type == ('MaskRCNN' if is_mask_rcnn else 'RetinaNet')
    assert bool(load.get('with_mask', False)) == is_mask_rcnn
    metric = cfg.val_evaluator.metric
    assert (set(metric) if isinstance(metric, (list, tuple)) else {metric}) == \
        ({'bbox', 'segm'} if is_mask_rcnn else {'bbox'})
    assert cfg.model.backbone.type == 'TimmBackbone'
    assert cfg.model.backbone.pretrained is False  # tests never download; the header says how to set a file


@pytest.mark.parametrize('path', [p for p in CONFIGS if os.path.basename(p).startswith('retinanet_')], ids=_ids)
def test_retinanet_and_mask_rcnn_share_the_backbone_settings(path):
    """The two configs of a model differ only in which stages feed the neck (RetinaNet: strides 8-32)."""
    other = os.path.join(ROOT, 'configs', 'mask_rcnn', 'mask-rcnn_' + os.path.basename(path)[len('retinanet_'):])
    retina, mask = load_config(path).model.backbone.to_dict(), load_config(other).model.backbone.to_dict()
    retina_out, mask_out = retina.pop('out_indices'), mask.pop('out_indices')
    assert retina == mask
    assert tuple(retina_out) == tuple(mask_out)[-len(retina_out):]
    assert len(mask_out) == 1 or len(mask_out) - len(retina_out) in (0, 1)


@pytest.mark.parametrize('path', CONFIGS, ids=_ids)
def test_model_builds_and_predicts_in_the_contract(path):
    cfg = load_config(path)
    model_cfg = cfg.model
    is_mask_rcnn = model_cfg.type == 'MaskRCNN'
    # keep low-scoring detections of the untrained heads, so that there are boxes to check; fewer of them (the mask
    # head's convs on 100 RoIs per image cost more than the rest of the test)
    test_cfg = model_cfg.roi_head.test_cfg if is_mask_rcnn else model_cfg.test_cfg
    test_cfg.update(score_thr=0.0, max_per_img=MAX_DETS)
    if is_mask_rcnn:
        model_cfg.test_cfg.rpn.max_per_img = 50
    torch.manual_seed(0)
    model = MODELS.build(model_cfg).eval()

    # the neck is told the channels the backbone gives
    in_channels = model_cfg.neck.in_channels
    in_channels = [in_channels] if isinstance(in_channels, int) else list(in_channels)
    assert list(model.backbone.out_channels) == in_channels

    data = model.data_preprocessor(_samples(), False)
    assert tuple(data['inputs'].shape) == (2, 3, 128, 128)
    with torch.no_grad():
        feats = model.backbone(data['inputs'])
        assert [f.shape[1] for f in feats] == in_channels
        assert [tuple(f.shape[-2:]) for f in feats] == [(128 // s, 128 // s) for s in model.backbone.strides]
        # every pyramid level sits at the stride its anchors (and RoI pooling) assume
        levels = model.extract_feat(data['inputs'])
        strides = _anchor_strides(model_cfg)
        assert [tuple(f.shape[-2:]) for f in levels] == [(max(128 // s, 1),) * 2 for s in strides]
        assert all(f.shape[1] == 256 for f in levels)
        if is_mask_rcnn:
            assert list(model_cfg.roi_head.featmap_strides) == strides[:len(model_cfg.roi_head.featmap_strides)]
        preds = model(**data, mode='predict')

    assert len(preds) == 2
    for i, (pred, (h, w)) in enumerate(zip(preds, SIZES)):
        assert pred['img_id'] == i and pred['img_path'] == f'{i}.jpg' and tuple(pred['ori_shape']) == (h, w)
        boxes, scores, labels = pred['pred_bboxes'], pred['pred_scores'], pred['pred_labels']
        k = len(scores)
        assert 0 < k <= MAX_DETS
        assert boxes.dtype == torch.float32 and boxes.shape == (k, 4)
        assert scores.dtype == torch.float32 and labels.dtype == torch.int64 and labels.shape == (k,)
        assert torch.all(scores[:-1] >= scores[1:]) and 0 <= float(scores.min()) and float(scores.max()) <= 1
        assert 0 <= int(labels.min()) and int(labels.max()) < 80
        assert float(boxes[:, 0::2].min()) >= 0 and float(boxes[:, 0::2].max()) <= w
        assert float(boxes[:, 1::2].min()) >= 0 and float(boxes[:, 1::2].max()) <= h
        assert torch.all(boxes[:, 2:] >= boxes[:, :2])
        if is_mask_rcnn:
            assert pred['pred_masks'].dtype == torch.bool and pred['pred_masks'].shape == (k, h, w)
        else:
            assert 'pred_masks' not in pred


def _batch_norm_stats(module):
    return [m.running_mean.clone() for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize('name, loss_keys, frozen_bn, zero_decay', [
    # VAN trains its BatchNorms (as VAN-Segmentation)
    ('retinanet/retinanet_van-b2_fpn_1x_coco.py', {'loss_cls', 'loss_bbox'}, False, None),
    # EfficientViT keeps every BatchNorm frozen and its attention biases out of weight decay (the official config)
    ('mask_rcnn/mask-rcnn_efficientvit-m4_fpn_1x_coco.py',
     {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'}, True, 'attention_biases'),
])
def test_one_training_step(name, loss_keys, frozen_bn, zero_decay):
    cfg = load_config(os.path.join(ROOT, 'configs', name))
    if cfg.model.type == 'MaskRCNN':  # fewer sampled RoIs: the box head's 1024-wide fc dominates the step otherwise
        cfg.model.roi_head.train_cfg.num = 64
        cfg.model.train_cfg.rpn_proposal.max_per_img = 200
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    if zero_decay:
        names = {id(p): n for n, p in model.named_parameters()}
        decays = {names[id(p)]: group['weight_decay'] for group in optim_wrapper.optimizer.param_groups
                  for p in group['params']}
        biases = [n for n in decays if zero_decay in n]
        assert biases and all(decays[n] == 0 for n in biases)
        assert any(decays[n] == 0.05 for n in decays if n.endswith('conv.weight'))
    bn_before = _batch_norm_stats(model.backbone)
    params_before = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if p.requires_grad}

    data = model.data_preprocessor(_samples(with_targets=True), True)
    losses = model(**data, mode='loss')
    assert set(losses) == loss_keys
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    loss, _ = model.parse_losses(losses)
    optim_wrapper.backward(loss)
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    optim_wrapper.step()
    changed = [n for n, p in model.backbone.named_parameters()
               if p.requires_grad and not torch.equal(p, params_before[n])]
    assert len(changed) > len(params_before) // 2

    bn_after = _batch_norm_stats(model.backbone)
    assert bn_before
    moved = [not torch.equal(a, b) for a, b in zip(bn_before, bn_after)]
    assert not any(moved) if frozen_bn else all(moved)
