"""The embedded shapes data as config-buildable datasets (generated into the cache on first use)."""
from typing import Optional

from ..registry import DATASETS
from ..utils.errors import DatasetError
from .image_folder import ImageFolderDataset
from .shapes import make_shapes

__all__ = ['ShapesClsDataset']


@DATASETS.register_module()
class ShapesClsDataset(ImageFolderDataset):
    """Classification split of the shapes data.

    Args:
        split: ``'train'`` or ``'val'``.
        data_root: cache folder for the generated data (default: ``$VISIONZOO_DATA/shapes`` or
            ``~/.cache/visionzoo/shapes``).
        shapes_cfg: keyword arguments of :func:`visionzoo.datasets.make_shapes` (seed, sizes, counts).
        **kwargs: as :class:`ImageFolderDataset` (``pipeline``, ``metainfo``, ``skip_corrupt``).
    """

    def __init__(self, split: str = 'train', data_root: Optional[str] = None, shapes_cfg: Optional[dict] = None,
                 **kwargs):
        if split not in ('train', 'val'):
            raise DatasetError(f"split: expected 'train' or 'val', got {split!r}")
        paths = make_shapes(data_root, **(shapes_cfg or {}))
        self.split = split
        super().__init__(paths[f'cls_{split}'], **kwargs)
