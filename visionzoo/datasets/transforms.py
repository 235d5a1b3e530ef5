"""Image transforms for classification, built by timm: from config fields, or from a model's pretrained cfg."""
import difflib
from typing import Callable, Optional

from ..registry import TRANSFORMS
from ..utils.options import argument_error

__all__ = ['TimmTransform', 'ModelEvalTransform']


@TRANSFORMS.register_module()
class TimmTransform:
    """``timm.data.create_transform`` from config: PIL image in, normalised CHW float tensor out.

    Every keyword of ``create_transform`` is accepted (``input_size``, ``is_training``, ``scale``, ``hflip``,
    ``auto_augment``, ``re_prob``, ``interpolation``, ``crop_pct``, ``mean``, ``std``, ...).
    """

    def __init__(self, input_size=224, is_training: bool = False, **kwargs):
        from timm.data import create_transform
        for key in ('scale', 'ratio', 'mean', 'std', 'color_jitter'):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        self.kwargs = dict(input_size=input_size, is_training=is_training, **kwargs)
        self.transform: Callable = create_transform(**self.kwargs)

    def __call__(self, img):
        return self.transform(img)

    def __repr__(self) -> str:
        return f'TimmTransform({self.kwargs})'


_DATA_CFG_KEYS = ('input_size', 'img_size', 'crop_pct', 'crop_mode', 'interpolation', 'mean', 'std')


@TRANSFORMS.register_module()
class ModelEvalTransform:
    """The evaluation transform of a timm model, from its pretrained cfg: what timm's ``validate.py`` does.

    ``timm.data.resolve_data_config`` on the model's pretrained cfg (the one ``timm.create_model(model_name)`` gets:
    input size, ``crop_pct``, ``crop_mode``, interpolation, mean and std), then ``create_transform(is_training=False)``.
    The model is not built; the cfg comes from timm's registry (``import visionzoo`` registers ours).

    Args:
        model_name: registered timm model name, optionally with a pretrained tag (``'van_b0'``,
            ``'vit_base_patch16_224.augreg_in1k'``). ``None`` in a config: ``tools/test.py`` fills it in from
            ``model.backbone.model_name``, so ``--cfg-options model.backbone.model_name=...`` changes both.
        use_test_size: use the cfg's ``test_input_size``/``test_crop_pct`` where it has them (timm's
            ``validate.py`` default); False (the default) gives ``resolve_data_config(model=...)``'s values.
        **overrides: any of ``input_size`` (int or ``(3, H, W)``), ``crop_pct``, ``crop_mode``, ``interpolation``,
            ``mean``, ``std``, which win over the pretrained cfg.
    """

    def __init__(self, model_name: Optional[str] = None, use_test_size: bool = False, **overrides):
        import timm
        from timm.data import create_transform, resolve_data_config
        from timm.models import resolve_pretrained_cfg
        owner = type(self).__name__
        if model_name is None:
            raise argument_error(owner, 'model_name', model_name, 'expected a timm model name (tools/test.py fills '
                                                                  'it in from model.backbone.model_name)')
        if not isinstance(model_name, str) or not timm.is_model(model_name):
            raise argument_error(owner, 'model_name', model_name, f'unknown timm model{_close_models(model_name)}')
        for key in overrides:
            if key not in _DATA_CFG_KEYS:
                raise argument_error(owner, key, overrides[key], f'unknown option; expected one of '
                                                                 f'{", ".join(_DATA_CFG_KEYS)} or use_test_size')
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        if isinstance(args.get('input_size'), int):
            args['img_size'] = args.pop('input_size')
        try:
            pretrained_cfg = resolve_pretrained_cfg(model_name).to_dict()
        except RuntimeError as e:  # a tag the architecture does not have
            raise argument_error(owner, 'model_name', model_name, f'{e} (tags: see timm.list_pretrained())') from None
        self.model_name = model_name
        self.data_config = resolve_data_config(args, pretrained_cfg=pretrained_cfg, use_test_size=use_test_size)
        self.transform: Callable = create_transform(**self.data_config, is_training=False)

    def __call__(self, img):
        return self.transform(img)

    def __repr__(self) -> str:
        return f'ModelEvalTransform({self.model_name!r}, {self.data_config})'


def _close_models(name) -> str:
    import timm
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6) if isinstance(name, str) else []
    return f'; close matches: {", ".join(close)}' if close else ''
