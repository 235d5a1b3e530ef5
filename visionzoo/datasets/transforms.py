"""Image transforms for classification, built by timm from config fields."""
from typing import Callable

from ..registry import TRANSFORMS

__all__ = ['TimmTransform']


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
