"""Drawing predictions onto images (OpenCV, BGR uint8)."""
import colorsys
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

__all__ = ['draw_prediction', 'draw_classification', 'draw_detection', 'draw_segmentation', 'class_color',
           'place_tags']


def _label(idx: int, classes: Optional[Sequence[str]]) -> str:
    return classes[idx] if classes is not None and 0 <= idx < len(classes) else str(idx)


def draw_classification(img: np.ndarray, pred_label: int, score: float, gt_label: Optional[int] = None,
                        classes: Optional[Sequence[str]] = None, min_side: int = 224) -> np.ndarray:
    """Upscale small images to ``min_side`` and write the predicted class and score in a banner."""
    h, w = img.shape[:2]
    if min(h, w) < min_side:
        s = min_side / min(h, w)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_NEAREST)
    img = img.copy()
    ok = gt_label is None or gt_label == pred_label
    text = f'{_label(pred_label, classes)} {score:.2f}'
    if gt_label is not None:
        text += f' (gt {_label(gt_label, classes)})'
    cv2.rectangle(img, (0, 0), (img.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(img, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 220, 0) if ok else (0, 0, 255), 1,
                cv2.LINE_AA)
    return img


def class_color(idx: int) -> tuple:
    """A fixed BGR colour per class index: hues a golden-ratio step apart, so neighbouring labels differ."""
    r, g, b = colorsys.hsv_to_rgb((idx * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def _array(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def draw_detection(img: np.ndarray, pred: dict, classes: Optional[Sequence[str]] = None, score_thr: float = 0.3,
                   min_side: int = 320, mask_alpha: float = 0.5) -> np.ndarray:
    """Draw the detections of ``pred`` scoring at least ``score_thr`` onto a copy of the BGR image ``img``.

    ``pred`` holds ``pred_bboxes`` (xyxy in ``img`` pixels), ``pred_scores``, ``pred_labels`` and optionally
    ``pred_masks`` ((K, H, W), image size), as a detector's ``predict`` returns them. Boxes, ``class score`` tags
    and translucent masks are drawn in the class's colour (:func:`class_color`), higher scores on top. Images
    whose shorter side is below ``min_side`` are upscaled first so the tags stay readable.
    """
    h, w = img.shape[:2]
    s = min_side / min(h, w) if min(h, w) < min_side else 1.0
    out = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_NEAREST) if s != 1.0 else img.copy()
    boxes = _array(pred['pred_bboxes']).astype(np.float64).reshape(-1, 4) * s
    scores = _array(pred['pred_scores']).astype(np.float64).reshape(-1)
    labels = _array(pred['pred_labels']).astype(np.int64).reshape(-1)
    masks = _array(pred['pred_masks']) if 'pred_masks' in pred else None
    keep = [i for i in np.argsort(scores, kind='stable') if scores[i] >= score_thr]  # ascending: best drawn last
    for i in keep:
        color = np.array(class_color(int(labels[i])), dtype=np.float64)
        if masks is not None:
            m = masks[i].astype(np.uint8)
            if m.shape != out.shape[:2]:
                m = cv2.resize(m, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_NEAREST)
            m = m.astype(bool)
            out[m] = (out[m] * (1.0 - mask_alpha) + color * mask_alpha).round().astype(np.uint8)
    thickness = max(1, round(min(out.shape[:2]) / 300))
    int_boxes = {i: tuple(int(round(v)) for v in boxes[i]) for i in keep}
    for i in keep:
        x1, y1, x2, y2 = int_boxes[i]
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), class_color(int(labels[i])), thickness)
    texts = {i: f'{_label(int(labels[i]), classes)} {scores[i]:.2f}' for i in keep}
    sizes = {i: cv2.getTextSize(texts[i], cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1) for i in keep}
    best_first = keep[::-1]
    tags = place_tags([int_boxes[i] for i in best_first],
                      [(tw + 2, th + base + 1) for (tw, th), base in (sizes[i] for i in best_first)], out.shape[:2])
    for i, (tx, ty, tw, th) in zip(best_first, tags):
        cv2.rectangle(out, (tx, ty), (tx + tw - 1, ty + th - 1), class_color(int(labels[i])), -1)
        cv2.putText(out, texts[i], (tx + 1, ty + sizes[i][0][1] + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def place_tags(boxes: Sequence[tuple], sizes: Sequence[tuple], image_hw: tuple) -> list:
    """Positions ``(x, y, w, h)`` for the label tags of ``boxes`` (xyxy, most important first), inside the image.

    Each tag goes to the first of these places that lies in the image and covers no tag placed before it: above
    the box's top-left corner, inside it at the top, below the box, inside at the bottom, then further up or down
    in steps of the tag height; if none is free, above the box (overlap is then unavoidable). Tags are shifted
    left when they would stick out on the right.
    """
    ih, iw = image_hw
    placed = []
    for (x1, y1, x2, y2), (w, h) in zip(boxes, sizes):
        x = min(max(x1, 0), max(iw - w, 0))
        candidates = [y1 - h, y1, y2, y2 - h]
        candidates += [c for k in range(1, 4) for c in (y1 - h * (k + 1), y2 + h * k)]
        spots = [(x, min(max(y, 0), max(ih - h, 0)), w, h) for y in candidates]
        free = [t for t, y in zip(spots, candidates) if 0 <= y <= ih - h and not any(_overlap(t, p) for p in placed)]
        placed.append(free[0] if free else spots[0])
    return placed


def draw_segmentation(img: np.ndarray, label: np.ndarray, classes: Optional[Sequence[str]] = None,
                      palette: Optional[Sequence[Sequence[int]]] = None, alpha: float = 0.5,
                      ignore_index: int = 255, min_side: int = 320) -> np.ndarray:
    """Colour a (H, W) label map over a copy of the BGR image ``img`` (same size) and add a legend.

    Each class gets its ``palette`` colour (RGB, as in mmseg's metainfo) or :func:`class_color`; pixels equal to
    ``ignore_index`` are left as they are. The legend, on a strip right of the image, lists the classes present in
    the map with their colour, most frequent first. Images whose shorter side is below ``min_side`` are upscaled.
    """
    label = _array(label).reshape(_array(label).shape[-2:]).astype(np.int64)
    if label.shape != img.shape[:2]:
        raise ValueError(f'draw_segmentation: label map {label.shape} and image {img.shape[:2]} differ in size')
    h, w = img.shape[:2]
    s = min_side / min(h, w) if min(h, w) < min_side else 1.0
    if s != 1.0:
        size = (round(w * s), round(h * s))
        img = cv2.resize(img, size, interpolation=cv2.INTER_NEAREST)
        label = cv2.resize(label.astype(np.int32), size, interpolation=cv2.INTER_NEAREST).astype(np.int64)
    out = img.copy()
    ids, counts = np.unique(label[label != ignore_index], return_counts=True)
    order = [int(i) for i in ids[np.argsort(-counts, kind='stable')]]

    def color(idx: int) -> tuple:
        if palette is not None and 0 <= idx < len(palette):
            r, g, b = palette[idx]
            return int(b), int(g), int(r)
        return class_color(idx)

    for idx in order:
        m = label == idx
        out[m] = (out[m] * (1.0 - alpha) + np.array(color(idx), dtype=np.float64) * alpha).round().astype(np.uint8)
    row = 18
    names = [_label(i, classes) for i in order]
    width = max([cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0] for n in names] + [0]) + 28
    legend = np.full((max(out.shape[0], row * len(order) + 4), width, 3), 255, dtype=np.uint8)
    for k, (idx, name) in enumerate(zip(order, names)):
        y = 4 + k * row
        cv2.rectangle(legend, (4, y), (17, y + 13), color(idx), -1)
        cv2.putText(legend, name, (22, y + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    canvas = np.full((legend.shape[0], out.shape[1] + width, 3), 255, dtype=np.uint8)
    canvas[:out.shape[0], :out.shape[1]] = out
    canvas[:, out.shape[1]:] = legend
    return canvas


def draw_prediction(img: np.ndarray, pred: dict, classes: Optional[Sequence[str]] = None,
                    score_thr: float = 0.3, palette: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
    """Draw one model prediction (a dict as returned by a model's ``predict`` mode) onto ``img``.

    ``score_thr`` hides detections scoring below it; ``palette`` (RGB per class) colours segmentation maps.
    """
    if 'pred_sem_seg' in pred:
        return draw_segmentation(img, pred['pred_sem_seg'], classes, palette)
    if 'pred_bboxes' in pred:
        return draw_detection(img, pred, classes, score_thr=score_thr)
    if 'pred_label' in pred:
        return draw_classification(img, int(pred['pred_label']), float(pred['pred_score'].max()),
                                   pred.get('gt_label'), classes)
    raise ValueError(f'draw_prediction: no drawer for a prediction with keys {sorted(pred)}')
