"""Semantic-segmentation datasets with mmseg 1.x names: ``SegDataset`` (a folder of images and a folder of label
maps) and ``ADE20KDataset``. (``ShapesSegDataset``, the semantic split of the generated shapes data, lives with the
other shapes datasets in ``shapes_dataset.py``.)

A record is ``dict(img_path, seg_map_path, reduce_zero_label, label_map, num_classes, ignore_index, seg_fields=[])``;
``LoadImageFromFile`` and ``LoadAnnotations`` read the files, and ``LoadAnnotations`` checks the label map against
its image (size) and the classes (values), so each bad file fails with one DatasetError naming it.
"""
import os
from typing import Callable, List, Optional, Sequence, Union

import numpy as np

from ..registry import DATASETS
from ..utils.errors import ConfigError, DatasetError
from .base import SampleDataset
from .coco import CocoDataset

__all__ = ['SegDataset', 'ADE20KDataset', 'random_palette']


def random_palette(n: int) -> List[List[int]]:
    """mmseg's palette for classes without one: ``randint(0, 255, (n, 3))`` of a numpy RNG seeded with 42."""
    return np.random.RandomState(42).randint(0, 255, size=(n, 3)).tolist()


@DATASETS.register_module()
class SegDataset(SampleDataset):
    """Images and label maps in two folders (mmseg's ``BaseSegDataset``).

    Images are the files under ``data_root/data_prefix['img_path']`` (searched recursively, sorted) whose names end
    with ``img_suffix``; the label map of ``<dir>/<name><img_suffix>`` is
    ``data_root/data_prefix['seg_map_path']/<dir>/<name><seg_map_suffix>``. With ``ann_file`` (a text file, one
    image name without suffix per line; relative to ``data_root``) only the listed images are used.

    Args:
        data_root: folder that relative paths are joined to ('' for none).
        data_prefix: ``dict(img_path=..., seg_map_path=...)``; ``seg_map_path=None`` for images without labels
            (inference only).
        img_suffix / seg_map_suffix: file name endings of images and label maps.
        metainfo: ``dict(classes=(...), palette=[[r, g, b], ...])``. Classes default to the class's ``METAINFO``; a
            subset of them (in any order) remaps labels (``label_map``: left-out classes become ``ignore_index``),
            as in mmseg. Without a palette, the default one (restricted to the selected classes) or mmseg's seeded
            random palette is used.
        reduce_zero_label: label 0 is "other" and ignored; ids ``v > 0`` become ``v - 1``.
        ignore_index: label value that is not evaluated or trained on (255).
        pipeline: transforms (see :func:`~visionzoo.datasets.base.build_pipeline`).
        test_mode: kept for config compatibility (every image is used either way).
        on_invalid: ``'error'`` raises a DatasetError for the first image without a label map (when the dataset is
            built) or with a bad label map (size or values, when it is loaded); ``'skip'`` drops it with a warning.
    """

    METAINFO: dict = {}

    def __init__(self, data_root: str = '', data_prefix: Optional[dict] = None, img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png', metainfo: Optional[dict] = None, reduce_zero_label: bool = False,
                 ignore_index: int = 255, pipeline: Union[Sequence, dict, Callable, None] = None,
                 test_mode: bool = False, ann_file: str = '', on_invalid: str = 'error'):
        if on_invalid not in ('error', 'skip'):
            raise ConfigError(f"on_invalid: expected 'error' or 'skip', got {on_invalid!r}")
        prefix = dict(img_path='', seg_map_path='')
        if data_prefix is not None:
            if not isinstance(data_prefix, dict) or set(data_prefix) - set(prefix):
                raise ConfigError(f"data_prefix: expected dict(img_path='<image folder>', seg_map_path='<label "
                                  f"folder>'), got {data_prefix!r}")
            prefix.update(data_prefix)
        if metainfo is not None and not isinstance(metainfo, dict):
            raise ConfigError(f'metainfo: expected dict(classes=(...), palette=[...]), got {metainfo!r}')
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or ignore_index < 0:
            raise ConfigError(f'ignore_index: expected a non-negative int, got {ignore_index!r}')
        self.data_root = data_root or ''
        self.img_dir = self._join(prefix['img_path'])
        self.ann_dir = None if prefix['seg_map_path'] is None else self._join(prefix['seg_map_path'])
        self.img_suffix = img_suffix
        self.seg_map_suffix = seg_map_suffix
        self.reduce_zero_label = bool(reduce_zero_label)
        self.ignore_index = ignore_index
        self.test_mode = test_mode
        self.on_invalid = on_invalid
        self.ann_file = self._join(ann_file) if ann_file else ''
        self._set_classes(metainfo or {})
        self._init_sample_dataset(pipeline, skip=on_invalid == 'skip', skip_option="on_invalid='skip'",
                                  source=self.img_dir)
        self.records = self._load_records()

    # the same path joining to data_root and raise-or-warn on invalid entries as CocoDataset
    _join = CocoDataset._join
    _invalid = CocoDataset._invalid

    # ------------------------------------------------------------------------------------------------ metainfo

    def _set_classes(self, metainfo: dict) -> None:
        default = self.METAINFO.get('classes')
        classes = metainfo.get('classes', default)
        if classes is None:
            raise ConfigError(f'{type(self).__name__}: metainfo.classes: expected the list of class names (this '
                              f'dataset has no default classes)')
        if isinstance(classes, str) or not isinstance(classes, (list, tuple)) or not classes:
            raise ConfigError(f'metainfo.classes: expected a non-empty list of class names, got {classes!r}')
        if len(set(classes)) != len(classes):
            raise ConfigError(f'metainfo.classes: names must be unique, got {list(classes)}')
        self.label_map = None
        if default is not None and list(classes) != list(default):
            unknown = [c for c in classes if c not in default]
            if unknown:
                raise ConfigError(f'metainfo.classes: {unknown[:5]} are not classes of {type(self).__name__} '
                                  f'(expected a subset of its {len(default)} classes)')
            self.label_map = {i: (classes.index(c) if c in classes else self.ignore_index)
                              for i, c in enumerate(default)}
        palette = metainfo.get('palette')
        if palette is None:
            default_palette = self.METAINFO.get('palette')
            if default_palette is not None and default is not None:
                palette = [default_palette[default.index(c)] for c in classes]
            else:
                palette = random_palette(len(classes))
        if len(palette) != len(classes) or not all(isinstance(p, (list, tuple)) and len(p) == 3 for p in palette):
            raise ConfigError(f'metainfo.palette: {len(palette)} entries for {len(classes)} classes (expected one '
                              f'[r, g, b] colour per class of metainfo.classes)')
        self.classes = tuple(classes)
        self.palette = [list(map(int, p)) for p in palette]

    @property
    def metainfo(self) -> dict:
        return dict(classes=self.classes, palette=self.palette, label_map=self.label_map,
                    reduce_zero_label=self.reduce_zero_label, ignore_index=self.ignore_index)

    # -------------------------------------------------------------------------------------------------- records
    def _image_names(self) -> List[str]:
        """Image paths relative to ``img_dir``, sorted."""
        if self.ann_file:
            try:
                with open(self.ann_file, encoding='utf-8') as f:
                    return [line.strip() + self.img_suffix for line in f if line.strip()]
            except OSError as e:
                raise DatasetError(f'{self.ann_file}: cannot read the image list ({e.strerror or e}; expected a '
                                   f'text file with one image name per line)') from None
        if not os.path.isdir(self.img_dir):
            raise DatasetError(f'{self.img_dir}: image folder not found (data_prefix.img_path is joined to '
                               f'data_root={self.data_root!r})')
        names = []
        for dirpath, _, files in os.walk(self.img_dir, followlinks=True):
            rel = os.path.relpath(dirpath, self.img_dir)
            names += [os.path.normpath(os.path.join(rel, f)) for f in files if f.endswith(self.img_suffix)]
        return sorted(names)

    def _load_records(self) -> List[dict]:
        names = self._image_names()
        if not names:
            raise DatasetError(f'{self.ann_file or self.img_dir}: no images ending with {self.img_suffix!r} '
                               f'(expected at least one image)')
        if self.ann_dir is not None and not os.path.isdir(self.ann_dir):
            raise DatasetError(f'{self.ann_dir}: label folder not found (data_prefix.seg_map_path is joined to '
                               f'data_root={self.data_root!r})')
        records = []
        for name in names:
            img_path = os.path.join(self.img_dir, name)
            record = dict(img_path=img_path, reduce_zero_label=self.reduce_zero_label, label_map=self.label_map,
                          num_classes=len(self.classes), ignore_index=self.ignore_index, seg_fields=[])
            if self.ann_file and not os.path.isfile(img_path):
                self._invalid(f'{img_path}: image file not found (listed in {self.ann_file})')
                continue
            if self.ann_dir is not None:
                seg_path = os.path.join(self.ann_dir, name[:-len(self.img_suffix)] + self.seg_map_suffix)
                if not os.path.isfile(seg_path):
                    self._invalid(f'{img_path}: the image has no label map (expected {seg_path})')
                    continue
                record['seg_map_path'] = seg_path
            records.append(record)
        if not records:
            raise DatasetError(f'{self.img_dir}: none of the {len(names)} images has a label map (expected at least '
                               f'one image with its label map under {self.ann_dir})')
        return records

    # -------------------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.records)

    def get_data_info(self, idx: int) -> dict:
        """The record of image ``idx`` (a fresh copy: the pipeline may change it freely)."""
        record = dict(self.records[idx])
        record['seg_fields'] = []
        return record

    def _prepare(self, i: int):
        return self.pipeline(self.get_data_info(i))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(img_dir={self.img_dir!r}, ann_dir={self.ann_dir!r}, images={len(self)}, '
                f'classes={len(self.classes)}, reduce_zero_label={self.reduce_zero_label})')


_ADE20K_CLASSES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed ', 'windowpane', 'grass', 'cabinet',
    'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
    'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence', 'desk', 'rock',
    'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard', 'chest of drawers',
    'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand', 'path', 'stairs', 'runway',
    'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge', 'bookcase', 'blind', 'coffee table',
    'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove', 'palm', 'kitchen island', 'computer',
    'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus', 'towel', 'light', 'truck', 'tower', 'chandelier',
    'awning', 'streetlight', 'booth', 'television receiver', 'airplane', 'dirt track', 'apparel', 'pole', 'land',
    'bannister', 'escalator', 'ottoman', 'bottle', 'buffet', 'poster', 'stage', 'van', 'ship', 'fountain',
    'conveyer belt', 'canopy', 'washer', 'plaything', 'swimming pool', 'stool', 'barrel', 'basket', 'waterfall',
    'tent', 'bag', 'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank', 'trade name', 'microwave', 'pot',
    'animal', 'bicycle', 'lake', 'dishwasher', 'screen', 'blanket', 'sculpture', 'hood', 'sconce', 'vase',
    'traffic light', 'tray', 'ashcan', 'fan', 'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower',
    'radiator', 'glass', 'clock', 'flag')

# mmseg's ADE20K palette, class by class
_ADE20K_PALETTE = [
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3], [120, 120, 80], [140, 140, 140],
    [204, 5, 255], [230, 230, 230], [4, 250, 7], [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70],
    [8, 255, 51], [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3], [0, 102, 200],
    [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71], [255, 9, 224], [9, 7, 230], [220, 220, 220],
    [255, 9, 92], [112, 9, 255], [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],
    [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20],
    [255, 8, 41], [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140, 140],
    [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0], [0, 0, 255], [255, 71, 0],
    [0, 235, 255], [0, 173, 255], [31, 0, 255], [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255],
    [0, 255, 112], [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0], [0, 143, 255],
    [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173], [10, 0, 255], [173, 255, 0], [0, 255, 153],
    [255, 92, 0], [255, 0, 255], [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20], [255, 184, 184],
    [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194], [0, 255, 82], [0, 10, 255],
    [0, 112, 255], [51, 0, 255], [0, 194, 255], [0, 122, 255], [0, 255, 163], [255, 153, 0], [0, 255, 10],
    [255, 112, 0], [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170], [133, 0, 255],
    [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255], [0, 214, 255], [255, 0, 112], [92, 255, 0],
    [0, 224, 255], [112, 224, 255], [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235], [245, 0, 255], [255, 0, 122],
    [255, 245, 0], [10, 190, 212], [214, 255, 0], [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255],
    [0, 41, 255], [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255], [71, 0, 255],
    [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0], [0, 133, 255], [255, 214, 0], [25, 194, 194],
    [102, 255, 0], [92, 0, 255]]


@DATASETS.register_module()
class ADE20KDataset(SegDataset):
    """ADE20K (SceneParsing, ADEChallengeData2016): ``images/{training,validation}/*.jpg`` and
    ``annotations/{training,validation}/*.png``, 150 classes (mmseg's names, including its ``'bed '``, and palette).
    Label 0 ("other") is ignored: ``reduce_zero_label`` is always True, suffixes are always ``.jpg`` / ``.png``.

    Example: ``ADE20KDataset(data_root='data/ade/ADEChallengeData2016', data_prefix=dict(
    img_path='images/validation', seg_map_path='annotations/validation'))``.
    """

    METAINFO = dict(classes=_ADE20K_CLASSES, palette=_ADE20K_PALETTE)

    def __init__(self, **kwargs):
        fixed = sorted(set(kwargs) & {'img_suffix', 'seg_map_suffix', 'reduce_zero_label'})
        if fixed:
            raise ConfigError(f'ADE20KDataset: {fixed} are fixed for ADE20K (.jpg images, .png labels, '
                              f'reduce_zero_label=True); remove them')
        super().__init__(img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True, **kwargs)
