"""Losses of the segmentation heads, with mmseg 1.x semantics and config names.

:class:`CrossEntropyLoss` is mmseg's softmax cross-entropy (``mmseg/models/losses/cross_entropy_loss.py``): the
per-pixel losses of ``F.cross_entropy`` (0 at ignored pixels), optionally times a per-pixel ``weight``, then

- ``reduction='mean'``: summed and divided by an average factor: the number of all pixels, ignored ones included
  (``avg_non_ignore=False``, mmseg's default), or of the non-ignored pixels (``avg_non_ignore=True``, PyTorch's own
  mean); with a ``class_weight``, the sum of the class weights of the labelled pixels, which is PyTorch's weighted
  mean. mmseg 1.2.2 raises IndexError for a class weight and a label with ignore pixels (it indexes the class
  weights with the ignore label); its value on labels without them is what this loss gives, and ignored pixels
  count with weight 0 whatever ``avg_non_ignore`` says;
- ``'sum'`` / ``'none'``: the sum / the per-pixel map;

and finally times ``loss_weight``. The key of the value in a head's loss dict is ``loss_name``.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from ..utils.options import argument_error

__all__ = ['CrossEntropyLoss', 'seg_accuracy']

_REDUCTIONS = ('none', 'mean', 'sum')
_EPS = torch.finfo(torch.float32).eps


def _check_number(owner: str, arg: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and not value > 0):
        raise argument_error(owner, arg, value, 'expected a positive number' if positive else 'expected a number')
    return float(value)


@MODELS.register_module()
class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy over the classes of ``(N, C, H, W)`` logits (mmseg 1.x ``CrossEntropyLoss``).

    Args:
        use_sigmoid, use_mask: mmseg's binary / mask variants; only False (softmax) is supported.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        class_weight: None or one weight per class (a list of numbers).
        loss_weight: factor of the loss.
        loss_name: key of the loss in the head's loss dict; it should start with ``loss_`` to be optimised.
        avg_non_ignore: average over the non-ignored pixels only (else over all pixels, as mmseg's default).
    """

    def __init__(self, use_sigmoid: bool = False, use_mask: bool = False, reduction: str = 'mean',
                 class_weight: Optional[Sequence[float]] = None, loss_weight: float = 1.0,
                 loss_name: str = 'loss_ce', avg_non_ignore: bool = False):
        super().__init__()
        name = type(self).__name__
        if use_sigmoid is not False:
            raise argument_error(name, 'use_sigmoid', use_sigmoid, 'only False (softmax cross-entropy) is supported')
        if use_mask is not False:
            raise argument_error(name, 'use_mask', use_mask, 'only False (softmax cross-entropy) is supported')
        if reduction not in _REDUCTIONS:
            raise argument_error(name, 'reduction', reduction, f'expected one of {_REDUCTIONS}')
        if class_weight is not None:
            if (not isinstance(class_weight, (list, tuple)) or not class_weight
                    or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in class_weight)):
                raise argument_error(name, 'class_weight', class_weight,
                                     'expected None or a list of non-negative numbers, one per class')
            class_weight = [float(w) for w in class_weight]
        if not isinstance(loss_name, str) or not loss_name:
            raise argument_error(name, 'loss_name', loss_name, 'expected a non-empty str')
        if not isinstance(avg_non_ignore, bool):
            raise argument_error(name, 'avg_non_ignore', avg_non_ignore, 'expected True or False')
        self.use_sigmoid = False
        self.use_mask = False
        self.reduction = reduction
        # a plain list, not a buffer: mmseg's loss has no state_dict entries, so neither may ours
        self.class_weight = class_weight
        self.loss_weight = _check_number(name, 'loss_weight', loss_weight)
        self.avg_non_ignore = avg_non_ignore
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def extra_repr(self) -> str:
        return f'reduction={self.reduction!r}, avg_non_ignore={self.avg_non_ignore}, loss_weight={self.loss_weight}'

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor, weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None, reduction_override: Optional[str] = None,
                ignore_index: int = -100, **kwargs) -> torch.Tensor:
        """The loss of ``cls_score`` (N, C, ...) against integer ``label`` (N, ...); ``weight``: per-pixel weights
        of label's shape; ``avg_factor``: the divisor of a mean, instead of the one the options choose."""
        name = type(self).__name__
        reduction = reduction_override or self.reduction
        if reduction not in _REDUCTIONS:
            raise argument_error(name, 'reduction_override', reduction_override, f'expected one of {_REDUCTIONS}')
        if cls_score.dim() != label.dim() + 1 or cls_score.shape[0] != label.shape[0] \
                or cls_score.shape[2:] != label.shape[1:]:
            raise ValueError(f'{name}: expected logits (N, C, ...) and labels (N, ...) of the same size, got '
                             f'{tuple(cls_score.shape)} and {tuple(label.shape)}')
        class_weight = None
        if self.class_weight is not None:
            if len(self.class_weight) != cls_score.shape[1]:
                raise argument_error(name, 'class_weight', self.class_weight,
                                     f'{len(self.class_weight)} weights for {cls_score.shape[1]} classes')
            class_weight = cls_score.new_tensor(self.class_weight)
        label = label.long()
        loss = F.cross_entropy(cls_score, label, weight=class_weight, reduction='none', ignore_index=ignore_index)
        if avg_factor is None and reduction == 'mean':
            valid = label != ignore_index
            if class_weight is not None:
                avg_factor = class_weight[label[valid]].sum()
            elif self.avg_non_ignore:
                avg_factor = int(valid.sum())
            else:
                avg_factor = label.numel()
        if weight is not None:
            loss = loss * weight.float()
        if avg_factor is None:
            loss = loss.mean() if reduction == 'mean' else loss.sum() if reduction == 'sum' else loss
        elif reduction == 'mean':
            loss = loss.sum() / (avg_factor + _EPS)
        elif reduction == 'sum':
            raise ValueError(f'{name}: avg_factor can not be used with reduction="sum"')
        return self.loss_weight * loss


@torch.no_grad()
def seg_accuracy(seg_logits: torch.Tensor, seg_label: torch.Tensor, ignore_index: Optional[int]) -> torch.Tensor:
    """Pixel accuracy in percent of the arg-max class over the non-ignored pixels, as mmseg's ``accuracy`` (top-1):
    ``(correct + eps) * 100 / (total + eps)`` with float32's eps, so no labelled pixel gives 100."""
    correct = seg_logits.argmax(dim=1) == seg_label
    if ignore_index is not None:
        valid = seg_label != ignore_index
        correct, total = correct[valid], int(valid.sum())
    else:
        total = seg_label.numel()
    return (correct.sum().float() + _EPS) * (100.0 / (total + _EPS))
