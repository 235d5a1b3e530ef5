"""Where detectors put their boxes: box encoding against an independent coder, and placement after training.

* Box coding: mmdet's ``DeltaXYWHBBoxCoder`` (means 0, stds 1 for RetinaNet/RPN, (0.1, 0.1, 0.2, 0.2) for the RoI
  head, ``dw``/``dh`` clamped at ``log(1000/16)`` when decoding) and FCOS's ``ltrb / stride`` distances, written out
  below as plain formulas with their own anchor / point layout (mmdet's). Checked on random boxes against the coder
  objects our models call, and through the models' own ``loss`` and ``predict`` with head outputs replaced by values
  from the formulas: the box loss must vanish, and every anchor must decode to the chosen box.
* Placement: RetinaNet, FCOS and Mask R-CNN trained on a few non-square images of coloured rectangles (one class per
  colour, no box symmetric under swapping x and y), then asked to predict on the same images: COCO AP@0.5
  (pycocotools) and the best-scored box of each class must land on its object. Training on ``[:, [1, 0, 3, 2]]``-
  swapped targets, or any other misplacement of the targets, fails these tests; the loss-decrease tests of
  ``test_detectors.py`` cannot tell.
"""
import contextlib
import copy
import io
import math

import numpy as np
import pytest
import torch
from mmengine.optim import OptimWrapper
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torchvision.ops import box_iou

import visionzoo  # noqa: F401  (registers everything)
from visionzoo.registry import MODELS

TINY_BACKBONE = dict(type='TimmBackbone', model_name='resnet10t', out_indices=(2, 3, 4))
TINY_NECK = dict(type='FPN', out_channels=32, num_outs=5, add_extra_convs='on_input')
DETECTORS = {
    # GroupNorm in the head (torchvision's RetinaNet v2): trained from scratch it leaves the 0.01-prior plateau within
    # a few steps, where the plain head needs hundreds
    'RetinaNet': dict(type='RetinaNet', backbone=TINY_BACKBONE, neck=TINY_NECK,
                      bbox_head=dict(type='RetinaHead', num_classes=3, in_channels=32, norm='GN')),
    'FCOS': dict(type='FCOS', backbone=TINY_BACKBONE, neck=dict(TINY_NECK, add_extra_convs='on_output'),
                 bbox_head=dict(type='FCOSHead', num_classes=3, in_channels=32, num_convs=2)),
    'MaskRCNN': dict(type='MaskRCNN', backbone=dict(TINY_BACKBONE, out_indices=(1, 2, 3, 4)),
                     neck=dict(type='FPN', out_channels=32, num_outs=5),
                     rpn_head=dict(type='RPNHead', in_channels=32),
                     roi_head=dict(type='StandardRoIHead', num_classes=3, in_channels=32, fc_channels=64,
                                   mask_channels=32, num_mask_convs=2, train_cfg=dict(num=64))),
}
HEIGHT, WIDTH = 64, 128  # non-square, already a multiple of 32: no padding
CLIP = math.log(1000.0 / 16)
RETINA_STDS, RPN_STDS, ROI_STDS = (1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2)


# ------------------------------------------------------------------------------- the independent formulas (mmdet)
def delta_encode(gt: torch.Tensor, boxes: torch.Tensor, stds) -> torch.Tensor:
    """mmdet ``DeltaXYWHBBoxCoder.encode`` (means 0): ``gt`` relative to ``boxes``, both (n, 4) xyxy."""
    px, py = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    pw, ph = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    gx, gy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=1)
    return deltas / deltas.new_tensor(stds)


def delta_decode(deltas: torch.Tensor, boxes: torch.Tensor, stds) -> torch.Tensor:
    """mmdet ``DeltaXYWHBBoxCoder.decode`` (means 0, no image clipping). The width/height deltas are clamped from
    above at log(1000/16); mmdet also clamps them from below at -log(1000/16), torchvision (which our models use) does
    not, so the tests keep them above that."""
    d = deltas * deltas.new_tensor(stds)
    px, py = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    pw, ph = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    gx, gy = px + pw * d[:, 0], py + ph * d[:, 1]
    gw, gh = pw * torch.exp(d[:, 2].clamp(max=CLIP)), ph * torch.exp(d[:, 3].clamp(max=CLIP))
    return torch.stack([gx - gw / 2, gy - gh / 2, gx + gw / 2, gy + gh / 2], dim=1)


def distance_encode(gt: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """FCOS targets (mmdet ``DistancePointBBoxCoder`` with ``norm_on_bbox``): (left, top, right, bottom) / stride."""
    x, y = points[:, 0], points[:, 1]
    return torch.stack([x - gt[:, 0], y - gt[:, 1], gt[:, 2] - x, gt[:, 3] - y], dim=1) / strides[:, None]


def distance_decode(distances: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    d = distances * strides[:, None]
    x, y = points[:, 0], points[:, 1]
    return torch.stack([x - d[:, 0], y - d[:, 1], x + d[:, 2], y + d[:, 3]], dim=1)


def mmdet_anchors(sizes, strides, scales, ratios) -> torch.Tensor:
    """mmdet ``AnchorGenerator`` (center offset 0): per level, per location (row-major), per ratio, per scale."""
    out = []
    for (h, w), stride in zip(sizes, strides):
        for y in range(h):
            for x in range(w):
                for r in ratios:
                    for s in scales:
                        aw, ah = stride * s / math.sqrt(r), stride * s * math.sqrt(r)
                        out.append([x * stride - aw / 2, y * stride - ah / 2, x * stride + aw / 2, y * stride + ah / 2])
    return torch.tensor(out, dtype=torch.float64)


def mmdet_points(sizes, strides):
    """mmdet ``MlvlPointGenerator`` (offset 0.5): cell centres, level by level, row-major; and each point's stride."""
    points, point_strides = [], []
    for (h, w), stride in zip(sizes, strides):
        for y in range(h):
            for x in range(w):
                points.append([(x + 0.5) * stride, (y + 0.5) * stride])
                point_strides.append(stride)
    return torch.tensor(points, dtype=torch.float64), torch.tensor(point_strides, dtype=torch.float64)


def random_boxes(n, g, lo=2.0, hi=90.0):
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    wh = lo + torch.rand(n, 2, generator=g, dtype=torch.float64) * (hi - lo)
    return torch.cat([xy, xy + wh], dim=1)


# -------------------------------------------------------------------------------------------- coders, directly
@pytest.mark.parametrize('name,where,stds', [
    ('RetinaNet', 'box_coder', RETINA_STDS),                                  # predict: postprocess_detections
    ('RetinaNet', 'bbox_head.regression_head.box_coder', RETINA_STDS),       # loss: regression targets
    ('MaskRCNN', 'rpn.box_coder', RPN_STDS),                                  # proposals and RPN targets
    ('MaskRCNN', 'roi_head.box_coder', ROI_STDS),                             # RoI targets and detections
])
def test_delta_coders_match_the_mmdet_formula(name, where, stds):
    coder = MODELS.build(DETECTORS[name])
    for attr in where.split('.'):
        coder = getattr(coder, attr)
    g = torch.Generator().manual_seed(0)
    boxes, gt = random_boxes(200, g), random_boxes(200, g)
    torch.testing.assert_close(coder.encode_single(gt, boxes), delta_encode(gt, boxes, stds))
    deltas = torch.empty(200, 4, dtype=torch.float64)
    deltas[:, :2] = torch.rand(200, 2, generator=g, dtype=torch.float64) * 4 - 2
    # width/height deltas (after the stds) from -4 to 6: a third of them beyond the clamp at log(1000/16) ~ 4.14
    deltas[:, 2:] = (torch.rand(200, 2, generator=g, dtype=torch.float64) * 10 - 4) / deltas.new_tensor(stds[2:])
    assert ((deltas[:, 2:] * deltas.new_tensor(stds[2:])) > CLIP).any(0).all()
    torch.testing.assert_close(coder.decode_single(deltas, boxes), delta_decode(deltas, boxes, stds))
    # round trip within the clamp
    torch.testing.assert_close(coder.decode_single(delta_encode(gt, boxes, stds), boxes), gt)


@pytest.mark.parametrize('where', ['box_coder', 'bbox_head.box_coder'])  # predict, loss
def test_fcos_coder_matches_the_distance_formula(where):
    coder = MODELS.build(DETECTORS['FCOS'])
    for attr in where.split('.'):
        coder = getattr(coder, attr)
    g = torch.Generator().manual_seed(1)
    strides = torch.tensor([8.0, 16.0, 32.0, 64.0, 128.0], dtype=torch.float64)[torch.randint(0, 5, (100,),
                                                                                                generator=g)]
    points = torch.rand(100, 2, generator=g, dtype=torch.float64) * 200
    cells = torch.cat([points - strides[:, None] / 2, points + strides[:, None] / 2], dim=1)  # our anchors: a cell
    gt = random_boxes(100, g)
    torch.testing.assert_close(coder.encode(cells, gt), distance_encode(gt, points, strides))
    distances = torch.rand(100, 4, generator=g, dtype=torch.float64) * 6 - 1
    torch.testing.assert_close(coder.decode(distances, cells), distance_decode(distances, points, strides))


# ------------------------------------------------------------------ coders, through the models' loss and predict
TARGETS = [torch.tensor([[70.25, 10.5, 118.75, 30.0]]), torch.tensor([[8.0, 20.0, 30.5, 61.0]])]
TARGET_LABELS = [2, 0]


def _blank_batch(model, training):
    samples = []
    for i, (box, label) in enumerate(zip(TARGETS, TARGET_LABELS)):
        masks = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.uint8)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box[0])
        masks[0, y1:y2, x1:x2] = 1
        samples.append(dict(img_id=i, img_path=f'{i}.png', ori_shape=(HEIGHT, WIDTH), img_shape=(HEIGHT, WIDTH),
                            scale_factor=(1.0, 1.0), flip=False, gt_bboxes=box.clone(),
                            gt_labels=torch.tensor([label]), gt_masks=masks))
    inputs = [torch.full((3, HEIGHT, WIDTH), 100, dtype=torch.uint8) for _ in samples]
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training)


def _feature_sizes(model, inputs):
    with torch.no_grad():
        return [tuple(f.shape[-2:]) for f in model.extract_feat(inputs)]


def _swap(t):
    return t[..., [1, 0, 3, 2]]


def _dense_outputs(name, model, inputs, boxes, labels, encode=lambda d: d):
    """Head outputs that place every anchor / point of image i on ``boxes[i]`` with a high score for ``labels[i]``,
    computed with the independent formulas (``encode`` post-processes the codes, e.g. to break them on purpose)."""
    sizes = _feature_sizes(model, inputs)
    strides = [8, 16, 32, 64, 128]
    if name == 'RetinaNet':
        anchors = mmdet_anchors(sizes, strides, [4 * 2 ** (i / 3) for i in range(3)], (0.5, 1.0, 2.0))
        codes = [delta_encode(b.double().expand(len(anchors), 4), anchors, RETINA_STDS) for b in boxes]
    else:
        points, point_strides = mmdet_points(sizes, strides)
        codes = [distance_encode(b.double().expand(len(points), 4), points, point_strides) for b in boxes]
    codes = encode(torch.stack(codes)).float()
    logits = torch.full(codes.shape[:2] + (3,), -12.0)
    for i, label in enumerate(labels):
        logits[i, :, label] = 6.0
    outputs = dict(cls_logits=logits, bbox_regression=codes)
    if name == 'FCOS':
        outputs['bbox_ctrness'] = torch.full(codes.shape[:2] + (1,), 6.0)
    return outputs


@pytest.mark.parametrize('name', ['RetinaNet', 'FCOS'])
def test_dense_detectors_decode_and_encode_like_the_formula(name):
    torch.manual_seed(0)
    model = MODELS.build(DETECTORS[name])
    model.eval()
    data = _blank_batch(model, False)
    model.bbox_head.forward = lambda feats: _dense_outputs(name, model, data['inputs'], TARGETS, TARGET_LABELS)
    with torch.no_grad():
        preds = model(**data, mode='predict')
    for pred, box, label in zip(preds, TARGETS, TARGET_LABELS):
        # every anchor decodes to the box: one detection left after NMS
        assert len(pred['pred_bboxes']) == 1, pred
        torch.testing.assert_close(pred['pred_bboxes'], box, rtol=0, atol=1e-3)
        assert pred['pred_labels'].tolist() == [label]

    model.train()
    data = _blank_batch(model, True)
    losses = {}
    for broken in (False, True):
        model.bbox_head.forward = lambda feats, b=broken: _dense_outputs(
            name, model, data['inputs'], TARGETS, TARGET_LABELS, encode=_swap if b else (lambda d: d))
        with torch.no_grad():
            losses[broken] = float(model(**data, mode='loss')['loss_bbox'])
    # regression outputs that decode to the targets have no box loss; x and y swapped in them, a large one
    assert losses[False] < 1e-4 and losses[True] > 0.05, losses


class _ProposalsAsFeatures(nn.Module):
    """Stands in for the RoI pooling: passes the proposals on as the 'features' of each RoI."""

    def forward(self, features, proposals, image_shapes):
        return torch.cat(proposals)


class _FormulaPredictor(nn.Module):
    """Stands in for the box predictor: per RoI, a high score for the image's class and the deltas (by the formula)
    that move the RoI onto the image's box. Records the RoIs it saw."""

    def __init__(self, boxes, labels, encode=lambda d: d):
        super().__init__()
        self.boxes, self.labels, self.encode, self.seen = boxes, labels, encode, []

    def forward(self, rois):
        self.seen.append(rois.detach().clone())
        # which image a RoI belongs to: the one whose box it overlaps (the tests' two boxes are disjoint)
        image = box_iou(rois, torch.cat(self.boxes)).argmax(1)
        target = torch.cat(self.boxes)[image].double()
        logits = torch.full((len(rois), 4), -8.0)
        logits[torch.arange(len(rois)), torch.tensor(self.labels)[image] + 1] = 8.0
        deltas = self.encode(delta_encode(target, rois.double(), ROI_STDS)).float()
        return logits, deltas.repeat(1, 4)


def _rpn_outputs(model, inputs, boxes, encode=lambda d: d):
    """RPN head outputs (objectness, deltas per level, torchvision's layout) placing every anchor on ``boxes[i]``."""
    sizes = _feature_sizes(model, inputs)
    strides = [4, 8, 16, 32, 64]
    objectness, deltas = [], []
    for size, stride in zip(sizes, strides):
        anchors = mmdet_anchors([size], [stride], [8.0], (0.5, 1.0, 2.0))  # (H*W*A, 4), A = 3
        codes = torch.stack([encode(delta_encode(b.double().expand(len(anchors), 4), anchors, RPN_STDS))
                             for b in boxes]).float()
        h, w = size
        deltas.append(codes.reshape(len(boxes), h, w, 3 * 4).permute(0, 3, 1, 2))  # channel = anchor * 4 + coord
        objectness.append(torch.full((len(boxes), 3, h, w), 5.0))
    return objectness, deltas


def test_mask_rcnn_decodes_and_encodes_like_the_formula():
    torch.manual_seed(0)
    model = MODELS.build(DETECTORS['MaskRCNN'])
    proposals = [torch.tensor([[60.0, 4.0, 112.0, 40.0]]), torch.tensor([[4.0, 24.0, 40.0, 56.0]])]
    model.roi_head.box_roi_pool = _ProposalsAsFeatures()
    model.roi_head.box_head = nn.Identity()
    model.roi_head.box_predictor = _FormulaPredictor(TARGETS, TARGET_LABELS)
    model.eval()
    data = _blank_batch(model, False)
    model.rpn.head.forward = lambda feats: _rpn_outputs(model, data['inputs'], proposals)
    with torch.no_grad():
        preds = model(**data, mode='predict')
    # the RPN decoded every anchor to the image's proposal (one left per level after its per-level NMS)
    seen = model.roi_head.box_predictor.seen[0]
    expected = torch.cat([p.expand(5, 4) for p in proposals])
    torch.testing.assert_close(seen, expected, rtol=0, atol=1e-3)
    for pred, box, label in zip(preds, TARGETS, TARGET_LABELS):
        assert len(pred['pred_bboxes']) == 1, pred
        torch.testing.assert_close(pred['pred_bboxes'], box, rtol=0, atol=1e-3)
        assert pred['pred_labels'].tolist() == [label]

    model.train()
    data = _blank_batch(model, True)
    losses = {}
    for broken in (False, True):
        encode = _swap if broken else (lambda d: d)
        model.rpn.head.forward = lambda feats, e=encode: _rpn_outputs(model, data['inputs'], TARGETS, e)
        model.roi_head.box_predictor = _FormulaPredictor(TARGETS, TARGET_LABELS, encode)
        with torch.no_grad():
            out = model(**data, mode='loss')
        losses[broken] = (float(out['loss_rpn_bbox']), float(out['loss_bbox']))
    # (the RPN's loss is averaged over its 256 sampled anchors per image, most of them negatives: small when broken)
    assert max(losses[False]) < 1e-6 and min(losses[True]) > 1e-3, losses


# ------------------------------------------------------------------------------------- placement after training
COLORS = ((230, 40, 40), (40, 220, 60), (50, 70, 235))  # class 0, 1, 2 on a flat grey background


def placement_set(n=3, height=HEIGHT, width=WIDTH, seed=0):
    """``n`` images, each with one elongated rectangle of every class, well apart; no box overlaps its own x/y swap
    by more than IoU 0.3 (most swaps leave the image)."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(n):
        img = torch.full((3, height, width), 110, dtype=torch.uint8)
        boxes = torch.zeros(0, 4)
        for _ in range(10000):
            if len(boxes) == len(COLORS):
                break
            long_side, short_side = int(torch.randint(28, 48, (1,), generator=g)), int(torch.randint(12, 22, (1,),
                                                                                                        generator=g))
            w, h = (long_side, short_side) if torch.rand(1, generator=g) < 0.5 else (short_side, long_side)
            x, y = int(torch.randint(0, width - w + 1, (1,), generator=g)), int(torch.randint(0, height - h + 1, (1,),
                                                                                              generator=g))
            box = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
            grown = box + torch.tensor([-6.0, -6.0, 6.0, 6.0])  # at least 6 pixels between objects
            if (len(boxes) and box_iou(grown, boxes).max() > 0) or box_iou(box, _swap(box)).item() > 0.3:
                continue
            boxes = torch.cat([boxes, box])
        assert len(boxes) == len(COLORS), 'could not place the rectangles'
        masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            img[:, y1:y2, x1:x2] = torch.tensor(COLORS[k], dtype=torch.uint8)[:, None, None]
            masks[k, y1:y2, x1:x2] = 1
        inputs.append(img)
        samples.append(dict(img_id=i, img_path=f'{i}.png', ori_shape=(height, width), img_shape=(height, width),
                            scale_factor=(1.0, 1.0), flip=False, gt_bboxes=boxes,
                            gt_labels=torch.arange(len(boxes)), gt_masks=masks))
    return dict(inputs=inputs, data_samples=samples)


def coco_ap50(data, preds, iou_type='bbox'):
    """COCO AP at IoU 0.5 (pycocotools) of ``preds`` on the ground truth of ``data``."""
    def rle(mask):
        encoded = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
        encoded['counts'] = encoded['counts'].decode()
        return encoded

    images, annotations, results = [], [], []
    for s, p in zip(data['data_samples'], preds):
        images.append(dict(id=s['img_id'], height=HEIGHT, width=WIDTH))
        for box, label, mask in zip(s['gt_bboxes'].tolist(), s['gt_labels'].tolist(), s['gt_masks']):
            x1, y1, x2, y2 = box
            annotations.append(dict(id=len(annotations) + 1, image_id=s['img_id'], category_id=label,
                                    bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1), iscrowd=0,
                                    segmentation=rle(mask)))
        for k, (box, score, label) in enumerate(zip(p['pred_bboxes'].tolist(), p['pred_scores'].tolist(),
                                                    p['pred_labels'].tolist())):
            x1, y1, x2, y2 = box
            result = dict(image_id=s['img_id'], category_id=label, bbox=[x1, y1, x2 - x1, y2 - y1], score=score)
            if iou_type == 'segm':
                result['segmentation'] = rle(p['pred_masks'][k])
            results.append(result)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dict(images=images, annotations=annotations,
                          categories=[dict(id=c, name=str(c)) for c in range(len(COLORS))])
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])


@pytest.fixture
def one_thread():
    """One intra-op thread: faster on a shared machine than oversubscribed cores, and the same run every time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


STEPS = {'RetinaNet': 50, 'FCOS': 60, 'MaskRCNN': 60}


@pytest.mark.parametrize('name', list(DETECTORS))
def test_boxes_land_on_the_objects_after_training(name, one_thread):
    torch.manual_seed(0)
    data = placement_set()
    model = MODELS.build(DETECTORS[name])
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    for _ in range(STEPS[name]):
        model.train_step({k: list(v) for k, v in copy.deepcopy(data).items()}, wrapper)
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(copy.deepcopy(data)), mode='predict')
    for s, p in zip(data['data_samples'], preds):
        for box, label in zip(s['gt_bboxes'], s['gt_labels']):
            mine = p['pred_labels'] == label
            assert mine.any(), (name, s['img_id'], int(label), 'no prediction of this class')
            best = p['pred_bboxes'][mine][0]  # predictions come sorted by score
            iou = float(box_iou(best[None], box[None]))
            assert iou >= 0.5, (name, s['img_id'], int(label), box.tolist(), best.tolist(), iou)
    ap50 = coco_ap50(data, preds)
    assert ap50 >= 0.9, (name, ap50)
    if name == 'MaskRCNN':
        ap50 = coco_ap50(data, preds, 'segm')
        assert ap50 >= 0.9, (name, 'segm', ap50)
