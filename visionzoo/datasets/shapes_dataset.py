"""The embedded shapes data as config-buildable datasets (generated into the cache on first use):
``ShapesClsDataset`` (ImageFolder layout), ``ShapesDetDataset`` (COCO instances JSON) and ``ShapesSegDataset``
(label-map PNGs rasterised from the detection split's instance masks on first use)."""
import json
import os
import shutil
import tempfile
from typing import Optional

import cv2
import numpy as np

from ..registry import DATASETS
from ..utils.errors import DatasetError
from .coco import CocoDataset
from .det_transforms import _decode_mask
from .image_folder import ImageFolderDataset
from .seg import SegDataset
from .shapes import SHAPES_CLASSES, make_shapes

__all__ = ['ShapesClsDataset', 'ShapesDetDataset', 'ShapesSegDataset', 'SHAPES_SEG_CLASSES', 'make_shapes_seg']

SHAPES_SEG_CLASSES = ('background',) + SHAPES_CLASSES
SHAPES_SEG_PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200]]
_SEG_VERSION = 1  # bump when the rasterisation changes: the label maps go to seg-v<version>/
_SEG_DONE = '.complete'


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


def _label_maps(ann_file: str):
    """``(file_name, (h, w) uint8 label map)`` of each image of a shapes COCO file: 0 is background, an object pixel
    is its COCO category id (the index in ``SHAPES_SEG_CLASSES``), objects painted in annotation-id order."""
    with open(ann_file) as f:
        coco = json.load(f)
    by_image = {}
    for ann in sorted(coco['annotations'], key=lambda a: a['id']):
        by_image.setdefault(ann['image_id'], []).append(ann)
    for img in coco['images']:
        h, w = img['height'], img['width']
        seg = np.zeros((h, w), np.uint8)
        for ann in by_image.get(img['id'], ()):
            mask = _decode_mask(ann['segmentation'], h, w)
            if mask is not None:
                seg[mask.astype(bool)] = ann['category_id']
        yield img['file_name'], seg


def make_shapes_seg(paths: dict, split: str) -> str:
    """The folder of label maps of the shapes detection split ``split``, rasterised once from its COCO masks.

    The maps go to ``<shapes folder>/seg-v<version>/<split>/<image name>.png`` (8-bit grey PNGs, one per detection
    image, written into a temporary folder and renamed into place, so concurrent first uses are safe). The shapes'
    visible masks are disjoint already (the generator cuts occluded parts out of earlier objects), and later
    annotations are painted over earlier ones anyway. An object that the generator left out of the annotations
    (too small after occlusion) stays background in the label map too.
    """
    base = os.path.join(paths['root'], f'seg-v{_SEG_VERSION}')
    folder = os.path.join(base, split)
    if os.path.isfile(os.path.join(folder, _SEG_DONE)):
        return folder
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.tmp-{split}-', dir=base)
    try:
        for name, seg in _label_maps(paths[f'det_{split}_ann']):
            out = os.path.join(tmp, os.path.splitext(name)[0] + '.png')
            if not cv2.imwrite(out, seg):
                raise DatasetError(f'{out}: could not write the label map')
        open(os.path.join(tmp, _SEG_DONE), 'w').close()
        try:
            os.rename(tmp, folder)
        except OSError:
            if not os.path.isfile(os.path.join(folder, _SEG_DONE)):  # not a concurrent complete copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@DATASETS.register_module()
class ShapesSegDataset(SegDataset):
    """Semantic split of the shapes data: the detection images with label maps (``background`` = 0, then the shape
    classes in COCO-id order) rasterised from the detection split's masks by :func:`make_shapes_seg`.

    Args:
        split: ``'train'`` or ``'val'``.
        data_root: cache folder for the generated data (default: ``$VISIONZOO_DATA/shapes`` or
            ``~/.cache/visionzoo/shapes``).
        shapes_cfg: keyword arguments of :func:`visionzoo.datasets.make_shapes` (seed, sizes, counts).
        **kwargs: as :class:`SegDataset` (``pipeline``, ``metainfo``, ``on_invalid``, ...).
    """

    METAINFO = dict(classes=SHAPES_SEG_CLASSES, palette=SHAPES_SEG_PALETTE)

    def __init__(self, split: str = 'train', data_root: Optional[str] = None, shapes_cfg: Optional[dict] = None,
                 **kwargs):
        paths = _shapes_split(split, data_root, shapes_cfg)
        self.split = split
        seg_dir = make_shapes_seg(paths, split)
        kwargs.setdefault('img_suffix', '.png')
        kwargs.setdefault('seg_map_suffix', '.png')
        super().__init__(data_prefix=dict(img_path=paths[f'det_{split}_img'], seg_map_path=seg_dir), **kwargs)
