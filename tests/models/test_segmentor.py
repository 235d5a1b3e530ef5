"""EncoderDecoder and SegDataPreprocessor: padding, whole/slide inference, flip and multi-scale TTA, training.

References are written out here: the sliding windows of mmseg's grid listed by hand for one image size, per-pixel
overlap counts from dense loops, the TTA average computed from the model's plain forward.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.optim import OptimWrapper

import visionzoo  # noqa: F401  (registers everything)
from visionzoo.registry import MODELS
from visionzoo.utils.errors import ArgumentError

NUM_CLASSES = 3


class TinyHead(nn.Module):
    """A decode head following the seg-head contract: forward / loss_by_feat / predict_by_feat."""

    def __init__(self, in_channels=8, num_classes=NUM_CLASSES, in_index=-1, kernel_size=1, align_corners=False,
                 ignore_index=255):
        super().__init__()
        self.num_classes, self.in_index, self.align_corners = num_classes, in_index, align_corners
        self.ignore_index = ignore_index
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size, padding=kernel_size // 2)

    def forward(self, feats):
        return self.conv(feats[self.in_index])

    def predict_by_feat(self, logits, size):
        return F.interpolate(logits, size=size, mode='bilinear', align_corners=self.align_corners)

    def loss_by_feat(self, logits, labels):
        logits = self.predict_by_feat(logits, labels.shape[-2:])
        valid = labels != self.ignore_index
        acc = (logits.argmax(1) == labels)[valid].float().mean() * 100
        return dict(loss_ce=F.cross_entropy(logits, labels, ignore_index=self.ignore_index), acc_seg=acc)


class TinyBackbone(nn.Module):
    """1x1 conv (or k x k conv: spatial context) + 2x2 average pooling: flip-equivariant on even sizes for k=1."""

    def __init__(self, kernel_size=1, channels=8):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, kernel_size, padding=kernel_size // 2)
        self.out_channels = [channels]

    def forward(self, x):
        return [F.avg_pool2d(torch.relu(self.conv(x)), 2)]


def _tiny_segmentor(kernel_size=1, test_cfg=None, **kwargs):
    torch.manual_seed(0)
    model = MODELS.build(dict(type='EncoderDecoder', backbone=dict(type=TinyBackbone, kernel_size=kernel_size),
                              decode_head=dict(type=TinyHead, kernel_size=kernel_size), test_cfg=test_cfg, **kwargs))
    return model.eval()


def _image(h, w, seed=0):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- preprocessor
def test_preprocessor_pads_images_and_labels_while_training():
    pre = MODELS.build(dict(type='SegDataPreprocessor', mean=[10., 20., 30.], std=[2., 4., 5.], size_divisor=16,
                            pad_val=-7, seg_pad_val=254))
    imgs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in ((20, 30), (25, 18))]
    gts = [torch.randint(0, 3, (20, 30)), torch.randint(0, 3, (25, 18))]
    samples = [dict(img_path=f'{i}.png', gt_sem_seg=g) for i, g in enumerate(gts)]
    out = pre(dict(inputs=imgs, data_samples=samples), training=True)
    batch, samples = out['inputs'], out['data_samples']
    assert batch.shape == (2, 3, 32, 32)
    mean, std = torch.tensor([10., 20., 30.]).view(3, 1, 1), torch.tensor([2., 4., 5.]).view(3, 1, 1)
    for i, (img, gt) in enumerate(zip(imgs, gts)):
        h, w = img.shape[1:]
        assert torch.allclose(batch[i, :, :h, :w], (img.float() - mean) / std)
        assert (batch[i, :, h:] == -7).all() and (batch[i, :, :, w:] == -7).all()
        seg = samples[i]['gt_sem_seg']
        assert seg.shape == (32, 32) and seg.dtype == torch.int64
        assert torch.equal(seg[:h, :w], gt) and (seg[h:] == 254).all() and (seg[:, w:] == 254).all()
        assert samples[i]['img_shape'] == (h, w) and samples[i]['pad_shape'] == (32, 32)
        assert samples[i]['batch_input_shape'] == (32, 32) and samples[i]['padding_size'] == (0, 32 - w, 0, 32 - h)

    fixed = MODELS.build(dict(type='SegDataPreprocessor', size=(24, 40)))
    out = fixed(dict(inputs=imgs[:1], data_samples=[dict(gt_sem_seg=gts[0])]), training=True)
    assert out['inputs'].shape == (1, 3, 24, 40) and out['data_samples'][0]['gt_sem_seg'].shape == (24, 40)
    assert (out['data_samples'][0]['gt_sem_seg'][20:] == 255).all()


def test_preprocessor_pads_nothing_at_test_time_unless_asked():
    img = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    gt = torch.randint(0, 3, (40, 60))  # at the original image's size: never padded at test time
    pre = MODELS.build(dict(type='SegDataPreprocessor', size_divisor=16))
    out = pre(dict(inputs=[img], data_samples=[dict(gt_sem_seg=gt)]), training=False)
    assert out['inputs'].shape == (1, 3, 20, 30) and out['data_samples'][0]['gt_sem_seg'] is gt
    assert out['data_samples'][0]['padding_size'] == (0, 0, 0, 0)
    pre = MODELS.build(dict(type='SegDataPreprocessor', test_cfg=dict(size_divisor=16)))
    out = pre(dict(inputs=[img], data_samples=[dict(gt_sem_seg=gt)]), training=False)
    assert out['inputs'].shape == (1, 3, 32, 32) and out['data_samples'][0]['padding_size'] == (0, 2, 0, 12)
    assert out['data_samples'][0]['gt_sem_seg'] is gt


def test_preprocessor_errors():
    with pytest.raises(ArgumentError, match=r'^SegDataPreprocessor\(size_divisor=0\): expected a positive int'):
        MODELS.build(dict(type='SegDataPreprocessor', size_divisor=0))
    with pytest.raises(ArgumentError, match=r'^SegDataPreprocessor\(size=\(3, 0\)\)'):
        MODELS.build(dict(type='SegDataPreprocessor', size=(3, 0)))
    with pytest.raises(ArgumentError, match=r"^SegDataPreprocessor\(test_cfg=\{'pad': 1\}\): unknown option"):
        MODELS.build(dict(type='SegDataPreprocessor', test_cfg=dict(pad=1)))
    pre = MODELS.build(dict(type='SegDataPreprocessor'))
    with pytest.raises(ValueError, match=r"a.png: gt_sem_seg is \(5, 5\) but the image is \(4, 4\)"):
        pre(dict(inputs=[torch.zeros(3, 4, 4, dtype=torch.uint8)],
                 data_samples=[dict(img_path='a.png', gt_sem_seg=torch.zeros(5, 5, dtype=torch.long))]), True)


# ---------------------------------------------------------------------------------------------------- inference
def test_whole_inference_cuts_padding_undoes_flip_and_resizes_to_ori_shape():
    model = _tiny_segmentor(kernel_size=3)
    x = _image(32, 32)  # a 20x24 image padded to 32x32, from an original of 30x36
    sample = dict(img_shape=(20, 24), ori_shape=(30, 36), flip=False)
    pred = model.predict(x, [dict(sample)])[0]
    with torch.no_grad():
        full = F.interpolate(model._forward(x), size=(32, 32), mode='bilinear', align_corners=False)
        expected = F.interpolate(full[:, :, :20, :24], size=(30, 36), mode='bilinear', align_corners=False)[0]
    assert pred['seg_logits'].shape == (NUM_CLASSES, 30, 36)
    assert torch.allclose(pred['seg_logits'], expected, atol=1e-6)
    assert pred['pred_sem_seg'].dtype == torch.int64 and torch.equal(pred['pred_sem_seg'], expected.argmax(0))

    flipped = model.predict(x, [dict(sample, flip=True, flip_direction='horizontal')])[0]
    assert torch.allclose(flipped['seg_logits'], pred['seg_logits'].flip(-1), atol=1e-6)
    vflipped = model.predict(x, [dict(sample, flip=True, flip_direction='vertical')])[0]
    assert torch.allclose(vflipped['seg_logits'], pred['seg_logits'].flip(-2), atol=1e-6)

    no_samples = model.predict(x)[0]
    assert torch.allclose(no_samples['seg_logits'], full[0], atol=1e-6)


def test_predict_cuts_padded_gt_and_refuses_train_mode():
    model = _tiny_segmentor()
    gt = torch.full((32, 32), 255, dtype=torch.long)
    gt[:20, :24] = 1
    pred = model.predict(_image(32, 32), [dict(img_shape=(20, 24), ori_shape=(20, 24), pad_shape=(32, 32),
                                               gt_sem_seg=gt)])[0]
    assert pred['gt_sem_seg'].shape == (20, 24) and (pred['gt_sem_seg'] == 1).all()
    model.train()
    with pytest.raises(RuntimeError, match="mode='predict' needs the model in eval mode"):
        model(_image(16, 16), [dict(ori_shape=(16, 16))], mode='predict')


def test_slide_equals_whole_when_one_window_covers_the_image():
    whole = _tiny_segmentor(kernel_size=3)
    x = _image(24, 20)
    for crop in ((24, 20), (32, 32)):  # exactly the image, and a crop larger than the image (shrinks to it)
        slide = _tiny_segmentor(kernel_size=3, test_cfg=dict(mode='slide', crop_size=crop, stride=(8, 8)))
        assert torch.allclose(slide.inference(x), whole.inference(x), atol=1e-6)


def test_slide_matches_hand_listed_windows():
    model = _tiny_segmentor(kernel_size=3, test_cfg=dict(mode='slide', crop_size=(16, 16), stride=(12, 10)))
    x = _image(40, 30, seed=1)
    # mmseg's grid for a 40x30 image, 16x16 crops, stride (12, 10): rows start 0, 12, 24; columns 0, 10 and the
    # last one moved back from 20 to 14 to end at the border
    rows, cols = [(0, 16), (12, 28), (24, 40)], [(0, 16), (10, 26), (14, 30)]
    total = torch.zeros(1, NUM_CLASSES, 40, 30)
    count = torch.zeros(40, 30)
    with torch.no_grad():
        for y1, y2 in rows:
            for x1, x2 in cols:
                crop = x[:, :, y1:y2, x1:x2]
                logits = F.interpolate(model._forward(crop), size=crop.shape[-2:], mode='bilinear',
                                       align_corners=False)
                total[:, :, y1:y2, x1:x2] += logits
                for yy in range(y1, y2):
                    for xx in range(x1, x2):
                        count[yy, xx] += 1
        out = model.inference(x)
    assert count.min() == 1 and count.max() == 6  # rows 12-15 x columns 14-15: 2 x 3 windows
    assert torch.allclose(out, total / count, atol=1e-6)
    # the windows see different context than the whole image: sliding is not whole-image inference here
    assert not torch.allclose(out, _tiny_segmentor(kernel_size=3).inference(x), atol=1e-4)


def test_flip_tta_of_a_flip_equivariant_model_equals_no_tta():
    x = _image(16, 20)
    sample = dict(img_shape=(16, 20), ori_shape=(24, 30))
    plain = _tiny_segmentor().predict(x, [dict(sample)])[0]
    tta = _tiny_segmentor(test_cfg=dict(flip=True)).predict(x, [dict(sample)])[0]
    assert torch.allclose(tta['seg_logits'].softmax(0), plain['seg_logits'].softmax(0), atol=1e-6)
    assert torch.equal(tta['pred_sem_seg'], plain['pred_sem_seg'])
    # a model with 3x3 context at odd positions is not flip-equivariant: there TTA changes the probabilities
    plain3 = _tiny_segmentor(kernel_size=3).predict(x, [dict(sample)])[0]
    tta3 = _tiny_segmentor(kernel_size=3, test_cfg=dict(flip=True)).predict(x, [dict(sample)])[0]
    assert not torch.allclose(tta3['seg_logits'].softmax(0), plain3['seg_logits'].softmax(0), atol=1e-4)


def test_multi_scale_flip_tta_matches_hand_written_average():
    scales = [0.5, 0.75, 1.0, 1.5]
    model = _tiny_segmentor(kernel_size=3, test_cfg=dict(scales=scales, flip=True))
    x = _image(32, 32, seed=2)  # a 22x26 image, padded to 32x32, of a 33x39 original, flipped by the pipeline
    sample = dict(img_shape=(22, 26), ori_shape=(33, 39), flip=True, flip_direction='horizontal')
    probs = []
    with torch.no_grad():
        image = x[:, :, :22, :26]
        for s in scales:
            size = (int(22 * s + 0.5), int(26 * s + 0.5))
            scaled = F.interpolate(image, size=size, mode='bilinear', align_corners=False)
            for flip in (False, True):
                inp = scaled.flip(-1) if flip else scaled
                logits = F.interpolate(model._forward(inp), size=size, mode='bilinear', align_corners=False)
                logits = logits.flip(-1) if flip else logits
                logits = logits.flip(-1)  # the pipeline's flip
                probs.append(F.interpolate(logits, size=(33, 39), mode='bilinear', align_corners=False)[0]
                             .softmax(0))
    expected = torch.stack(probs).mean(0)
    pred = model.predict(x, [sample])[0]
    assert pred['seg_logits'].shape == (NUM_CLASSES, 33, 39)
    assert torch.allclose(pred['seg_logits'].softmax(0), expected, atol=1e-5)
    assert torch.equal(pred['pred_sem_seg'], expected.argmax(0))


def test_bad_test_cfg_and_missing_gt():
    def build(test_cfg=None, **kwargs):
        return MODELS.build(dict(type='EncoderDecoder', backbone=dict(type=TinyBackbone),
                                 decode_head=dict(type=TinyHead), test_cfg=test_cfg, **kwargs))
    with pytest.raises(ArgumentError, match=r"^EncoderDecoder\(test_cfg.mode='tile'\): expected 'whole' or 'slide'"):
        build(dict(mode='tile'))
    with pytest.raises(ArgumentError, match=r'^EncoderDecoder\(test_cfg.stride=None\): mode=.slide. needs'):
        build(dict(mode='slide', crop_size=16))
    with pytest.raises(ArgumentError, match=r'^EncoderDecoder\(test_cfg.crop_size=\(16, -1\)\)'):
        build(dict(mode='slide', crop_size=(16, -1), stride=8))
    with pytest.raises(ArgumentError, match=r'^EncoderDecoder\(test_cfg.stride=\(8, 20\)\): expected at most'):
        build(dict(mode='slide', crop_size=16, stride=(8, 20)))
    with pytest.raises(ArgumentError, match=r'^EncoderDecoder\(test_cfg.scales=\[\]\)'):
        build(dict(scales=[]))
    with pytest.raises(ArgumentError, match=r"^EncoderDecoder\(test_cfg=\{'flip_ratio': 0.5\}\): unknown option"):
        build(dict(flip_ratio=0.5))
    with pytest.raises(ArgumentError, match=r'^EncoderDecoder\(auxiliary_head=3\)'):
        build(auxiliary_head=3)
    model = build()
    with pytest.raises(ValueError, match=r'loss: data sample 1 \(b.png\) has no gt_sem_seg'):
        model.loss(_image(16, 16).expand(2, -1, -1, -1), [dict(img_path='a.png', gt_sem_seg=torch.zeros(16, 16)),
                                                         dict(img_path='b.png')])
    with pytest.raises(ValueError, match=r"mode: expected 'loss', 'predict' or 'tensor'"):
        model(_image(16, 16), mode='train')


# ---------------------------------------------------------------------------------------------------- training
def _seg_batch(n=2, size=64, seed=0):
    """uint8 images whose bright rectangles are the classes 1 and 2 (0: background), as det_collate batches them."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(n):
        img = torch.randint(0, 60, (3, size, size), generator=g, dtype=torch.uint8)
        seg = torch.zeros(size, size, dtype=torch.long)
        for k in (1, 2):
            y, x = (int(v) for v in torch.randint(0, size - 24, (2,), generator=g))
            img[k, y:y + 24, x:x + 24] = 255
            seg[y:y + 24, x:x + 24] = k
        seg[:2] = 255  # a few ignored pixels
        inputs.append(img)
        samples.append(dict(img_path=f'{i}.png', ori_shape=(size, size), img_shape=(size, size), flip=False,
                            gt_sem_seg=seg))
    return dict(inputs=inputs, data_samples=samples)


def _train_losses(cfg, steps=8, lr=0.05):
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.train()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    history = []
    for _ in range(steps):
        batch = _seg_batch()
        with torch.no_grad():
            history.append({k: float(v) for k, v in model(**model.data_preprocessor(batch, True), mode='loss')
                            .items()})
        model.train_step(batch, wrapper)
    return model, history


def test_each_loss_term_decreases_with_timm_backbone_and_aux_heads():
    backbone = dict(type='TimmBackbone', model_name='resnet10t', out_indices=(1, 2, 3, 4))
    cfg = dict(type='EncoderDecoder', backbone=backbone,
               decode_head=dict(type=TinyHead, in_channels=512, in_index=3, kernel_size=1),
               auxiliary_head=[dict(type=TinyHead, in_channels=256, in_index=2),
                               dict(type=TinyHead, in_channels=128, in_index=1)],
               data_preprocessor=dict(type='SegDataPreprocessor', size_divisor=32))
    model, history = _train_losses(cfg)
    assert set(history[0]) == {'decode.loss_ce', 'decode.acc_seg', 'aux_0.loss_ce', 'aux_0.acc_seg',
                               'aux_1.loss_ce', 'aux_1.acc_seg'}
    for key in ('decode.loss_ce', 'aux_0.loss_ce', 'aux_1.loss_ce'):
        assert history[-1][key] < 0.7 * history[0][key], (key, [h[key] for h in history])
    model.eval()
    with torch.no_grad():
        preds = model.val_step(_seg_batch(n=1, size=48))
    assert preds[0]['seg_logits'].shape == (NUM_CLASSES, 48, 48) and preds[0]['pred_sem_seg'].shape == (48, 48)
    assert model(torch.zeros(1, 3, 64, 64), mode='tensor').shape == (1, NUM_CLASSES, 2, 2)


def test_upernet_with_fcn_aux_head_trains_and_predicts():
    """The real heads of visionzoo.heads.seg_heads, as mmseg's UPerNet configs use them (small widths, BN)."""
    norm = dict(type='BN', requires_grad=True)
    cfg = dict(type='EncoderDecoder',
               backbone=dict(type='TimmBackbone', model_name='resnet10t', out_indices=(1, 2, 3, 4)),
               decode_head=dict(type='UPerHead', in_channels=[64, 128, 256, 512], in_index=[0, 1, 2, 3],
                                pool_scales=(1, 2, 3, 6), channels=16, dropout_ratio=0.1, num_classes=NUM_CLASSES,
                                norm_cfg=norm, align_corners=False),
               auxiliary_head=dict(type='FCNHead', in_channels=256, in_index=2, channels=16, num_convs=1,
                                   concat_input=False, dropout_ratio=0.1, num_classes=NUM_CLASSES, norm_cfg=norm,
                                   align_corners=False,
                                   loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
               data_preprocessor=dict(type='SegDataPreprocessor', size_divisor=32),
               test_cfg=dict(mode='slide', crop_size=(32, 32), stride=(24, 24)))
    model, history = _train_losses(cfg, steps=8, lr=0.05)
    assert set(history[0]) == {'decode.loss_ce', 'decode.acc_seg', 'aux.loss_ce', 'aux.acc_seg'}
    for key in ('decode.loss_ce', 'aux.loss_ce'):  # the aux loss is weighted 0.4: it falls from ~0.43 to ~0.3
        assert history[-1][key] < 0.8 * history[0][key], (key, [h[key] for h in history])
    model.eval()
    with torch.no_grad():
        preds = model.val_step(_seg_batch(n=1, size=48))
    assert preds[0]['seg_logits'].shape == (NUM_CLASSES, 48, 48) and preds[0]['pred_sem_seg'].shape == (48, 48)
