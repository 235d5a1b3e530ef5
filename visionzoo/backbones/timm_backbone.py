"""Any timm model, visionzoo's or timm's, by name: for classifiers and as a dense-prediction backbone."""
import difflib
import logging
import os
import re
from typing import List, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..registry import MODELS
from ..utils.errors import CheckpointError, ConfigError

__all__ = ['create_timm_model', 'TimmBackbone']


class _PretrainedLoadReport(logging.Handler):
    """Collects the missing/unexpected keys timm reports (only in its log) after loading pretrained weights."""

    _PATTERN = re.compile(r'(Missing|Unexpected) keys \((.*)\) (?:discovered|found) while loading pretrained')

    def __init__(self):
        super().__init__(logging.INFO)
        self.missing: List[str] = []
        self.unexpected: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = self._PATTERN.match(record.getMessage())
        if match:
            keys = [k.strip() for k in match.group(2).split(',') if k.strip()]
            (self.missing if match.group(1) == 'Missing' else self.unexpected).extend(keys)


def _classifier_names(model_name: str) -> Tuple[str, ...]:
    cfg = timm.models.get_pretrained_cfg(model_name)
    names = getattr(cfg, 'classifier', None) or ()
    return (names,) if isinstance(names, str) else tuple(names)


def create_timm_model(model_name: str, pretrained: Union[bool, str] = False, **kwargs) -> nn.Module:
    """``timm.create_model`` with config-friendly errors.

    ``pretrained`` may be a local checkpoint path: it is loaded through the model's pretrained cfg and
    ``checkpoint_filter_fn`` (``pretrained_cfg_overlay=dict(file=path)``), so official checkpoints work too. The
    load is strict except for the classifier: timm loads non-strictly whenever the head differs (always for
    ``num_classes=0`` and ``features_only``) and only logs what it skipped, which would leave a backbone silently
    random; here any other missing or unexpected key is a :class:`CheckpointError`.
    """
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
        hint = f'; did you mean: {", ".join(close)}' if close else ''
        raise ConfigError(f'backbone.model_name: unknown timm model {model_name!r}{hint}')
    if not isinstance(pretrained, str):
        return timm.create_model(model_name, pretrained=pretrained, **kwargs)
    if not os.path.isfile(pretrained):
        raise CheckpointError(f'backbone.pretrained: checkpoint file not found: {pretrained}')
    overlay = dict(kwargs.pop('pretrained_cfg_overlay', None) or {}, file=pretrained)
    report = _PretrainedLoadReport()
    logger = logging.getLogger('timm.models._builder')
    saved = logger.level, logger.propagate
    logger.addHandler(report)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the keys are reported below, as an error
    try:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (RuntimeError, ValueError, KeyError) as e:  # what timm's loader and load_state_dict raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f'backbone.pretrained: {pretrained} does not load into {model_name}: {first}') from e
    finally:
        logger.removeHandler(report)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    head = tuple(name + '.' for name in _classifier_names(model_name))
    missing = [k for k in report.missing if not k.startswith(head)]
    unexpected = [k for k in report.unexpected if not k.startswith(head)]
    if missing or unexpected:
        def listed(keys):
            return ', '.join(keys[:8]) + (f' (+{len(keys) - 8} more)' if len(keys) > 8 else '')
        parts = ([f'missing {len(missing)} keys: {listed(missing)}'] if missing else []) + \
            ([f'unexpected {len(unexpected)} keys: {listed(unexpected)}'] if unexpected else [])
        raise CheckpointError(f'backbone.pretrained: {pretrained} does not match {model_name}: ' + '; '.join(parts))
    return model


@MODELS.register_module()
class TimmBackbone(BaseModule):
    """A timm model as a dense-prediction backbone: ``forward(images)`` returns a list of NCHW feature maps.

    Built with timm's ``features_only`` (``feature_cls='getter'`` models such as Vim go through
    ``forward_intermediates``), so every model with timm feature support works, including timm's own.

    Args:
        model_name: timm model name, e.g. ``'vim_tiny'``.
        out_indices: feature indices (stages of hierarchical models, blocks of ViT-style models); None: the
            model's default.
        pretrained: False, or a local checkpoint (official layouts load through the model's checkpoint filter).
        norm_eval: keep BatchNorm layers in eval mode (frozen statistics) while training.
        with_cp: gradient checkpointing through the model's ``set_grad_checkpointing``.
        init_cfg: mmengine init config (e.g. ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``).
        **model_kwargs: passed to ``timm.create_model`` (``img_size``, ``class_token=False``,
            ``drop_path_rate``, ...).
    """

    def __init__(self, model_name: str, out_indices: Optional[Sequence[int]] = None,
                 pretrained: Union[bool, str] = False, norm_eval: bool = False, with_cp: bool = False,
                 init_cfg: Optional[dict] = None, **model_kwargs):
        super().__init__(init_cfg=init_cfg)
        if out_indices is not None:
            model_kwargs['out_indices'] = tuple(out_indices)
        self.body = create_timm_model(model_name, pretrained=pretrained, features_only=True, **model_kwargs)
        self.norm_eval = norm_eval
        if with_cp:
            target = self.body if hasattr(self.body, 'set_grad_checkpointing') else getattr(self.body, 'model', None)
            if target is None or not hasattr(target, 'set_grad_checkpointing'):
                raise ConfigError(f'backbone.with_cp: {model_name} has no gradient checkpointing')
            target.set_grad_checkpointing(True)

    @property
    def out_channels(self) -> List[int]:
        return list(self.body.feature_info.channels())

    @property
    def strides(self) -> List[int]:
        return list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = self.body(x)
        feats = list(feats.values()) if isinstance(feats, dict) else list(feats)
        if getattr(self.body, 'output_fmt', 'NCHW') == 'NHWC':  # timm's Format is a str enum
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return feats

    def train(self, mode: bool = True) -> 'TimmBackbone':
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
