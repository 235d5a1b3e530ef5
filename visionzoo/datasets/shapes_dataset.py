"""The embedded shapes data as config-buildable datasets (generated into the cache on first use):
``ShapesClsDataset`` (ImageFolder layout) and ``ShapesDetDataset`` (COCO instances JSON)."""
from typing import Optional

from ..registry import DATASETS
from ..utils.errors import DatasetError
from .coco import CocoDataset
from .image_folder import ImageFolderDataset
from .shapes import make_shapes

__all__ = ['ShapesClsDataset', 'ShapesDetDataset']


def _shapes_split(split: str, data_root: Optional[str], shapes_cfg: Optional[dict]) -> dict:
    """Check ``split`` and generate (or reuse) the data; returns the paths of :func:`make_shapes`."""
    if split not in ('train', 'val'):
        raise DatasetError(f"split: expected 'train' or 'val', got {split!r}")
    return make_shapes(data_root, **(shapes_cfg or {}))


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
        paths = _shapes_split(split, data_root, shapes_cfg)
        self.split = split
        super().__init__(paths[f'cls_{split}'], **kwargs)


@DATASETS.register_module()
class ShapesDetDataset(CocoDataset):
    """Detection split of the shapes data (4 classes, COCO category ids 1-4).

    Args:
        split: ``'train'`` or ``'val'``.
        data_root: cache folder for the generated data (default: ``$VISIONZOO_DATA/shapes`` or
            ``~/.cache/visionzoo/shapes``).
        shapes_cfg: keyword arguments of :func:`visionzoo.datasets.make_shapes` (seed, sizes, counts).
        **kwargs: as :class:`CocoDataset` (``pipeline``, ``metainfo``, ``filter_cfg``, ``test_mode``,
            ``on_invalid``).
    """

    def __init__(self, split: str = 'train', data_root: Optional[str] = None, shapes_cfg: Optional[dict] = None,
                 **kwargs):
        paths = _shapes_split(split, data_root, shapes_cfg)
        self.split = split
        super().__init__(ann_file=paths[f'det_{split}_ann'], data_prefix=dict(img=paths[f'det_{split}_img']),
                         **kwargs)
