"""Any timm model, visionzoo's or timm's, by name: for classifiers and as a dense-prediction backbone."""
import difflib
import logging
import os
import re
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..layers.norm_act import NormCfg, build_norm
from ..registry import MODELS
from ..utils.errors import CheckpointError
from ..utils.options import argument_error

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


def _load_error_summary(error: Exception, limit: int = 400) -> str:
    """The lines of a ``load_state_dict`` error that name keys (missing, unexpected, size mismatch)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    keyed = [line for line in lines if line.startswith(('Missing key', 'Unexpected key', 'size mismatch'))]
    text = '; '.join(keyed or lines[:1]) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + ' ...'


_FEATURE_ONLY_KWARGS = ('features_only', 'out_indices', 'feature_cls', 'feature_cfg', 'flatten_sequential',
                        'feature_location', 'output_fmt')


def _full_model(model_name: str, kwargs: dict) -> nn.Module:
    """The full (classifier) model built with the arguments of a ``features_only`` one, on the meta device (no
    memory, no initialisation cost; it serves key names and shapes only), on the CPU if the family cannot be built
    there."""
    full_kwargs = {k: v for k, v in kwargs.items() if k not in _FEATURE_ONLY_KWARGS}
    try:
        with torch.device('meta'):
            return timm.create_model(model_name, pretrained=False, **full_kwargs)
    except (RuntimeError, NotImplementedError):  # an initialiser that reads tensor values
        return timm.create_model(model_name, pretrained=False, **full_kwargs)


def _feature_dropped_keys(model_name: str, kwargs: dict) -> set:
    """The state_dict keys of the full (classifier) model that its ``features_only`` model lacks.

    A ``features_only`` model's pretrained weights are loaded into the model before any feature wrapper and with
    the full model's key names (timm builds some families, e.g. EfficientNet, as a separate feature class without
    ``conv_head``/``bn2``), so an unexpected key of a full classifier checkpoint is a dropped module exactly when
    the full model, built with the same arguments, has it.
    """
    return set(_full_model(model_name, kwargs).state_dict())


def _family_filter(model_name: str) -> Optional[Callable[[dict, nn.Module], dict]]:
    """The ``checkpoint_filter_fn(state_dict, model)`` of the module that registers ``model_name`` (what its
    ``pretrained`` path applies), or None."""
    module = sys.modules.get(timm.models.model_entrypoint(model_name).__module__)
    return getattr(module, 'checkpoint_filter_fn', None)


def apply_family_filter(model_name: str, state: Dict[str, torch.Tensor], model: nn.Module,
                        owner: str) -> Dict[str, torch.Tensor]:
    """``state`` through the ``checkpoint_filter_fn`` of ``model_name``'s family (official layouts -> timm's
    names; unchanged when the family has none); a filter that fails is a :class:`CheckpointError` naming ``owner``."""
    family_filter = _family_filter(model_name)
    if family_filter is None:
        return state
    try:
        return family_filter(dict(state), model)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f'{owner}: the weights do not convert through {family_filter.__module__}.'
                              f'checkpoint_filter_fn: {e}') from e


# per-output norms of the official dense models: (stage index, rest of the key); BiFormer's extra_norms.{i} by default,
# a family module may declare its own as OFFICIAL_OUT_NORMS (NAT's detection/segmentation code: norm{i})
_OFFICIAL_OUT_NORMS = r'^extra_norms\.(\d+)\.(.*)$'


def _family_out_norms(model_name: str) -> str:
    module = sys.modules.get(timm.models.model_entrypoint(model_name).__module__)
    return getattr(module, 'OFFICIAL_OUT_NORMS', _OFFICIAL_OUT_NORMS)


def create_timm_model(model_name: str, pretrained: Union[bool, str] = False, *, owner: str = 'create_timm_model',
                      arg_prefix: str = '', **kwargs) -> nn.Module:
    """``timm.create_model`` with errors that name the argument.

    ``pretrained`` may be a local checkpoint path: it is loaded through the model's pretrained cfg and
    ``checkpoint_filter_fn`` (``pretrained_cfg_overlay=dict(file=path)``), so official checkpoints work too. The
    load is strict except for the classifier: timm loads non-strictly whenever the head differs (always for
    ``num_classes=0`` and ``features_only``) and only logs what it skipped, which would leave a backbone silently
    random; here any other missing or unexpected key is a :class:`CheckpointError`. With ``features_only``, a full
    classifier checkpoint also loads: the keys of the modules the feature model drops (e.g. EfficientNet's
    ``conv_head``/``bn2``) are accepted, and only those.

    Errors start with ``owner(arg_prefix + argument=...)``: ``TimmBackbone(model_name='vann_b0'): unknown timm
    model; close matches: van_b0``, ``ImageClassifier(backbone.pretrained=...): ...``.
    """
    if not isinstance(model_name, str) or not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6) \
            if isinstance(model_name, str) else []
        hint = f'; close matches: {", ".join(close)}' if close else ''
        raise argument_error(owner, arg_prefix + 'model_name', model_name, f'unknown timm model{hint}')
    if not isinstance(pretrained, str):
        return timm.create_model(model_name, pretrained=pretrained, **kwargs)
    where = f'{owner}({arg_prefix}pretrained=...)'
    if not os.path.isfile(pretrained):
        raise CheckpointError(f'{where}: checkpoint file not found: {pretrained}')
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
        raise CheckpointError(f'{where}: {pretrained} does not load into {model_name}: '
                              f'{_load_error_summary(e)}') from e
    finally:
        logger.removeHandler(report)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    head = tuple(name + '.' for name in _classifier_names(model_name))
    missing = [k for k in report.missing if not k.startswith(head)]
    unexpected = [k for k in report.unexpected if not k.startswith(head)]
    if unexpected and kwargs.get('features_only'):
        # a full classifier checkpoint: the keys of the modules the feature model lacks (full model's keys minus
        # the feature model's, e.g. EfficientNet's conv_head/bn2) may be dropped; nothing else
        dropped = _feature_dropped_keys(model_name, kwargs)
        unexpected = [k for k in unexpected if k not in dropped]
    if missing or unexpected:
        def listed(keys):
            return ', '.join(keys[:8]) + (f' (+{len(keys) - 8} more)' if len(keys) > 8 else '')
        parts = ([f'missing {len(missing)} keys: {listed(missing)}'] if missing else []) + \
            ([f'unexpected {len(unexpected)} keys: {listed(unexpected)}'] if unexpected else [])
        raise CheckpointError(f'{where}: {pretrained} does not match {model_name}: ' + '; '.join(parts))
    return model


@MODELS.register_module()
class TimmBackbone(BaseModule):
    """A timm model as a dense-prediction backbone: ``forward(images)`` returns a list of NCHW feature maps.

    Built with timm's ``features_only`` (``feature_cls='getter'`` models such as Vim go through
    ``forward_intermediates``), so every model with timm feature support works, including timm's own.
    :meth:`convert_state_dict` maps the family's official/classification layout (e.g. the ``backbone.*`` weights of
    an official mmseg checkpoint) to this module's keys.

    Args:
        model_name: timm model name, e.g. ``'vim_tiny'``.
        out_indices: feature indices (stages of hierarchical models, blocks of ViT-style models); None: the
            model's default.
        pretrained: False, or a local checkpoint (official layouts load through the model's checkpoint filter).
        frozen_stages: -1 trains everything; 0 freezes the stem (every parameter before the first feature
            module); k >= 1 freezes everything up to and including feature module k-1 (mmdet's convention: 1 = stem
            and the first stage). Frozen parameters stop requiring gradients and their modules stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode (frozen statistics) while training, as the official
            EfficientViT/SHViT detection code does.
        out_norm: a norm on each output, as the official dense code of some families adds: ``'LN'`` (channel
            LayerNorm, eps 1e-6; MambaOut, BiFormer), ``dict(type='LN', eps=1e-5)`` (SLAB uses PyTorch's default
            eps), or None (:func:`visionzoo.layers.build_norm`, limited to ``LN``).
        with_cp: gradient checkpointing through the model's ``set_grad_checkpointing``.
        init_cfg: mmengine init config (e.g. ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``).
        **model_kwargs: passed to ``timm.create_model`` (``img_size``, ``class_token=False``,
            ``drop_path_rate``, ...).
    """

    def __init__(self, model_name: str, out_indices: Optional[Sequence[int]] = None,
                 pretrained: Union[bool, str] = False, frozen_stages: int = -1, norm_eval: bool = False,
                 out_norm: NormCfg = None, with_cp: bool = False,
                 init_cfg: Optional[dict] = None, **model_kwargs):
        super().__init__(init_cfg=init_cfg)
        if out_indices is not None:
            model_kwargs['out_indices'] = tuple(out_indices)
        self.model_name = model_name
        self._model_kwargs = dict(model_kwargs)  # for convert_state_dict (the full model's names)
        self.body = create_timm_model(model_name, pretrained=pretrained, features_only=True, owner='TimmBackbone',
                                      **model_kwargs)
        self.norm_eval = norm_eval
        self.out_norms = None if out_norm is None else nn.ModuleList(
            build_norm(out_norm, c, owner='TimmBackbone', arg='out_norm', allowed=('LN',)) for c in self.out_channels)
        if with_cp:
            target = self.body if hasattr(self.body, 'set_grad_checkpointing') else getattr(self.body, 'model', None)
            if target is None or not hasattr(target, 'set_grad_checkpointing'):
                raise argument_error('TimmBackbone', 'with_cp', with_cp,
                                     f'{model_name} has no gradient checkpointing')
            target.set_grad_checkpointing(True)
        self._frozen = self._freeze(frozen_stages)

    def _freeze(self, frozen_stages: int) -> List[nn.Module]:
        """Freeze the parameters of the stem and the first stages; returns the modules to keep in eval mode."""
        modules = self.body.feature_info.module_name()
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= len(modules):
            raise argument_error('TimmBackbone', 'frozen_stages', frozen_stages,
                                 f'expected an int from -1 to {len(modules)} (the number of feature modules)')
        if frozen_stages < 0:
            return []
        params = list(self.body.named_parameters())
        # FeatureListNet flattens the top level ('stages.0' -> 'stages_0'); getter nets keep the model as .model
        k = max(frozen_stages - 1, 0)
        # Swin-style stages ('layers.1.blocks' feeds the features, 'layers.1.downsample' follows): a frozen stage
        # includes its trailing downsample, as mmdet's Swin freezes whole stages
        stage = modules[k][:-len('.blocks')] if modules[k].endswith('.blocks') and frozen_stages > 0 else modules[k]
        prefixes = (stage.replace('.', '_', 1) + '.', 'model.' + stage + '.', stage + '.')
        inside = [i for i, (name, _) in enumerate(params) if name.startswith(prefixes)]
        if not inside:
            raise argument_error('TimmBackbone', 'frozen_stages', frozen_stages,
                                 f'cannot find the parameters of feature module {modules[k]!r}')
        end = inside[-1] + 1 if frozen_stages > 0 else inside[0]
        frozen = {id(p) for _, p in params[:end]}
        for _, p in params[:end]:
            p.requires_grad_(False)
        return [m for m in self.body.modules()
                if any(True for _ in m.parameters()) and all(id(p) in frozen for p in m.parameters())]

    def convert_state_dict(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Backbone weights in the family's official (classification or dense) layout -> this module's keys.

        For official segmentation/detection checkpoints (their ``backbone.*`` entries without the prefix) and
        classification checkpoints. Keys that are already this module's pass through unchanged; the others:

        * per-output norms of the official dense code (``extra_norms.{stage}``, BiFormer; a family module may name
          its own pattern as ``OFFICIAL_OUT_NORMS``, NAT's ``norm{stage}``) -> ``out_norms.{i}``, i the
          position of the stage in ``out_indices`` (norms of stages not taken are dropped); without ``out_norm`` they
          stay as they are, so a strict load names them;
        * the rest goes through the family's ``checkpoint_filter_fn`` (as ``pretrained=PATH`` does), then from the
          full model's names to the feature wrapper's (``model.`` for getter-style wrappers; ``stages.1.x`` ->
          ``stages_1.x`` where timm's ``FeatureListNet`` flattened a top-level Sequential);
        * keys of modules the feature model lacks (classifier, final norm, stages after the last output) are
          dropped: exactly the full model's keys that have no place here. Anything else keeps its name, for the
          strict load to report.
        """
        own = self.state_dict()
        out = {k: v for k, v in state.items() if k in own}
        rest = {k: v for k, v in state.items() if k not in own}
        if not rest:
            return dict(state)
        if self.out_norms is not None:
            levels = len(self.body.feature_info.info)  # every feature level of the model, taken or not
            indices = [i % levels for i in self.body.feature_info.out_indices]
            pattern = re.compile(_family_out_norms(self.model_name))
            for key in list(rest):
                match = pattern.match(key)
                stage = int(match.group(1)) if match else -1
                if stage in indices:
                    out[f'out_norms.{indices.index(stage)}.{match.group(2)}'] = rest.pop(key)
                elif 0 <= stage < levels:
                    del rest[key]  # the norm of a level this backbone does not output
        if not rest:
            return out
        full = _full_model(self.model_name, self._model_kwargs)
        # filters may read the model's real tensors (e.g. a position grid); a getter wrapper keeps the real model
        rest = apply_family_filter(self.model_name, rest, getattr(self.body, 'model', full),
                                   f'TimmBackbone(model_name={self.model_name!r})')
        full_keys = set(full.state_dict())
        for key, value in rest.items():
            for name in ('body.model.' + key, 'body.' + key, 'body.' + key.replace('.', '_', 1)):
                if name in own:
                    out[name] = value
                    break
            else:
                if key not in full_keys:
                    out[key] = value  # not the family's: left for the strict load to name
        return out

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
        if self.out_norms is not None:
            feats = [norm(f) for norm, f in zip(self.out_norms, feats)]
        return feats

    def train(self, mode: bool = True) -> 'TimmBackbone':
        super().train(mode)
        if mode:
            for m in self._frozen:
                m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self
