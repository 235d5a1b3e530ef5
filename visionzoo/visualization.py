"""Drawing predictions onto images (OpenCV, BGR uint8)."""
from typing import Optional, Sequence

import cv2
import numpy as np

__all__ = ['draw_prediction', 'draw_classification']


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


def draw_prediction(img: np.ndarray, pred: dict, classes: Optional[Sequence[str]] = None) -> np.ndarray:
    """Draw one model prediction (a dict as returned by a model's ``predict`` mode) onto ``img``."""
    if 'pred_label' in pred:
        return draw_classification(img, int(pred['pred_label']), float(pred['pred_score'].max()),
                                   pred.get('gt_label'), classes)
    raise ValueError(f'draw_prediction: no drawer for a prediction with keys {sorted(pred)}')
