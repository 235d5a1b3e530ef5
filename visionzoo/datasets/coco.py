"""COCO instances dataset: ``CocoDataset`` for any COCO-format JSON file (``ShapesDetDataset``, the generated shapes
data, lives next to ``ShapesClsDataset`` in ``shapes_dataset.py``).

The annotation file is validated once, when the dataset is built, so that bad input fails early with one message
naming the file and the image / annotation id instead of crashing deep inside a training step. Only image decoding is
left to load time (``LoadImageFromFile``).
"""
import json
import math
import os
import pickle
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from ..registry import DATASETS
from ..utils.errors import ConfigError, DatasetError
from .base import SampleDataset

__all__ = ['CocoDataset']

_SKIP_HINT = "set on_invalid='skip' on the dataset to drop such entries with a warning"
_BOX_TOLERANCE = 1.0  # px a box may stick out of its image (real files have x + w == width); such boxes are clipped


# Values come from json.loads, so exact type checks suffice (and keep bools out); they run once per JSON value.
def _is_int(v) -> bool:
    return type(v) is int


def _is_number(v) -> bool:
    return (type(v) is int or type(v) is float) and math.isfinite(v)


def _finite_numbers(values: list) -> bool:
    """All finite numbers; one C-level ``sum`` instead of a Python check per value (polygons are long)."""
    try:
        return math.isfinite(sum(values))
    except TypeError:
        return False


def _preview(items: Sequence, limit: int = 12) -> str:
    items = list(items)
    head = ', '.join(repr(i) for i in items[:limit])
    return head + (f', ... ({len(items)} in all)' if len(items) > limit else '')


@DATASETS.register_module()
class CocoDataset(SampleDataset):
    """COCO instances dataset (mmdet's ``CocoDataset`` names, plain dict records).

    One record per image, ``dict(img_id, img_path, height, width, instances=[dict(bbox=[x1, y1, x2, y2],
    bbox_label, ignore_flag, mask, ann_id), ...])``, with boxes converted from COCO ``[x, y, w, h]`` to pixel
    ``xyxy`` (exclusive right/bottom edge), labels 0-based indices into ``metainfo['classes']``, ``ignore_flag`` =
    ``iscrowd`` and ``mask`` the COCO polygons or RLE (None when the annotation has none). Items are
    ``pipeline(record)``.

    Records are kept pickled in one numpy buffer (as mmengine's ``serialize_data``): DataLoader workers forked from
    the main process then share it instead of copying millions of small Python objects on first touch.

    Args:
        ann_file: COCO instances JSON; relative paths are joined to ``data_root``.
        data_root: folder that relative ``ann_file`` and ``data_prefix['img']`` are joined to ('' for none).
        data_prefix: ``dict(img=<folder of the images>)``; image ``file_name`` entries are relative to it.
        pipeline: list of transform config dicts (built from the ``TRANSFORMS`` registry) or callables (see
            :func:`~visionzoo.datasets.base.build_pipeline`).
        metainfo: ``dict(classes=(...))`` selects and orders categories by name; annotations of other categories are
            dropped. By default every category of the file, sorted by id.
        filter_cfg: ``dict(filter_empty_gt=True, min_size=0)``: when not ``test_mode``, drop images without
            annotations of the selected classes and images whose shorter side is below ``min_size``.
        test_mode: keep every image (no filtering), as for validation and testing.
        on_invalid: ``'error'`` raises a DatasetError for the first invalid image or annotation (missing or
            undecodable image file, malformed record, bad box, unknown category); ``'skip'`` drops it with a warning.
            ``'skip'`` also makes ``dataset[i]`` warn about an image the pipeline cannot load and return the next one,
            as ``ImageFolderDataset(skip_corrupt=True)`` does (:class:`~visionzoo.datasets.base.SampleDataset`).
    """

    def __init__(self, ann_file: str, data_root: str = '', data_prefix: Optional[dict] = None,
                 pipeline: Union[Sequence, dict, Callable, None] = None, metainfo: Optional[dict] = None,
                 filter_cfg: Optional[dict] = None, test_mode: bool = False, on_invalid: str = 'error'):
        if on_invalid not in ('error', 'skip'):
            raise ConfigError(f"on_invalid: expected 'error' or 'skip', got {on_invalid!r}")
        data_prefix = dict(img='') if data_prefix is None else data_prefix
        if not isinstance(data_prefix, dict) or not isinstance(data_prefix.get('img', ''), str):
            raise ConfigError(f"data_prefix: expected dict(img='<image folder>'), got {data_prefix!r}")
        filter_cfg = {'filter_empty_gt': True, 'min_size': 0, **(filter_cfg or {})}
        if set(filter_cfg) != {'filter_empty_gt', 'min_size'}:
            raise ConfigError(f'filter_cfg: expected keys filter_empty_gt and min_size, got {sorted(filter_cfg)}')
        if metainfo is not None and not isinstance(metainfo, dict):
            raise ConfigError(f'metainfo: expected dict(classes=(...)), got {metainfo!r}')
        self.data_root = data_root or ''
        self.ann_file = os.path.abspath(self._join(ann_file))
        self.img_prefix = self._join(data_prefix.get('img', ''))
        self.filter_cfg = filter_cfg
        self.test_mode = test_mode
        self.on_invalid = on_invalid
        self._init_sample_dataset(pipeline, skip=on_invalid == 'skip', skip_option="on_invalid='skip'",
                                  source=self.ann_file)

        data = self._load_json()
        self._parse_categories(data['categories'], (metainfo or {}).get('classes'))
        records = self._parse(data)
        del data
        if not test_mode:
            records = self._filter(records)
        if not records:
            need = '' if test_mode else (', annotations of the selected classes (unless filter_cfg.filter_empty_gt'
                                         '=False) and a short side of at least filter_cfg.min_size='
                                         f"{filter_cfg['min_size']} px")
            raise DatasetError(f'{self.ann_file}: no usable images (expected at least one valid image record with an '
                               f'existing file{need})')
        blobs = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in records]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.frombuffer(b''.join(blobs), dtype=np.uint8)

    # ------------------------------------------------------------------------------------------------ loading
    def _join(self, path: str) -> str:
        if not isinstance(path, str):
            raise ConfigError(f'expected a path string, got {path!r}')
        return os.path.join(self.data_root, path) if self.data_root and not os.path.isabs(path) else path

    def _load_json(self) -> dict:
        expected = "expected a COCO instances JSON object with 'images', 'annotations' and 'categories' lists"
        try:
            with open(self.ann_file, 'rb') as f:
                raw = f.read()
        except FileNotFoundError:
            raise DatasetError(f'{self.ann_file}: annotation file not found ({expected}; a relative ann_file is '
                               f'joined to data_root={self.data_root!r})') from None
        except OSError as e:
            raise DatasetError(f'{self.ann_file}: cannot read the annotation file ({e.strerror or e})') from None
        if not raw.strip():
            raise DatasetError(f'{self.ann_file}: the annotation file is empty ({expected})')
        try:
            data = json.loads(raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            raise DatasetError(f'{self.ann_file}: not valid JSON ({e}); {expected}') from None
        if not isinstance(data, dict):
            raise DatasetError(f'{self.ann_file}: the top level is a JSON {type(data).__name__}; {expected}')
        missing = [k for k in ('images', 'annotations', 'categories') if k not in data]
        if missing:
            raise DatasetError(f'{self.ann_file}: missing key(s) {missing}; {expected}')
        for key in ('images', 'annotations', 'categories'):
            if not isinstance(data[key], list):
                raise DatasetError(f"{self.ann_file}: '{key}' is a JSON {type(data[key]).__name__}; {expected}")
        return data

    def _parse_categories(self, categories: list, classes) -> None:
        names: Dict[int, str] = {}
        for i, cat in enumerate(categories):
            if not isinstance(cat, dict) or not _is_int(cat.get('id')) or not isinstance(cat.get('name'), str):
                raise DatasetError(f"{self.ann_file}: category entry #{i} {str(cat)[:80]} is malformed (expected "
                                   f"an object with an integer 'id' and a string 'name')")
            if cat['id'] in names:
                raise DatasetError(f"{self.ann_file}: category id {cat['id']} appears twice in 'categories' "
                                   f"(expected unique ids)")
            names[cat['id']] = cat['name']
        self._all_cat_ids = set(names)
        if classes is None:
            cat_ids = sorted(names)
        else:
            if isinstance(classes, str) or not isinstance(classes, (list, tuple)):
                raise ConfigError(f'metainfo.classes: expected a list of class names, got {classes!r}')
            if len(set(classes)) != len(classes):
                raise ConfigError(f'metainfo.classes: names must be unique, got {list(classes)}')
            by_name: Dict[str, List[int]] = {}
            for cid, name in sorted(names.items()):
                by_name.setdefault(name, []).append(cid)
            cat_ids = []
            for name in classes:
                ids = by_name.get(name, [])
                if not ids:
                    raise DatasetError(f'{self.ann_file}: class {name!r} from metainfo.classes is not a category '
                                       f'of this file (expected one of {_preview(by_name)})')
                if len(ids) > 1:
                    raise DatasetError(f'{self.ann_file}: class {name!r} from metainfo.classes names several '
                                       f'categories (ids {ids}); expected unique category names')
                cat_ids.append(ids[0])
        self.cat_ids = cat_ids
        self.classes = tuple(names[c] for c in cat_ids)
        self.cat2label = {c: i for i, c in enumerate(cat_ids)}

    def _invalid(self, message: str) -> None:
        """An invalid image or annotation: raise, or warn when ``on_invalid='skip'`` (the caller drops it)."""
        if self.on_invalid == 'error':
            raise DatasetError(f'{message}; {_SKIP_HINT}')
        warnings.warn(f'{message}; skipped (on_invalid=skip)', stacklevel=3)

    def _image_problem(self, img) -> Optional[str]:
        if not isinstance(img, dict):
            return 'is not a JSON object'
        if not isinstance(img.get('file_name'), str) or not img['file_name']:
            return "has no 'file_name' string"
        for key in ('width', 'height'):
            v = img.get(key)
            if not _is_number(v) or v <= 0 or int(v) != v:
                return f"has {key}={v!r} (expected a positive integer)"
        return None

    def _parse(self, data: dict) -> List[dict]:
        records: Dict[int, dict] = {}
        dropped_images = set()
        first_entry: Dict[int, int] = {}
        for i, img in enumerate(data['images']):
            img_id = img.get('id') if isinstance(img, dict) else None
            if not _is_int(img_id):
                self._invalid(f"{self.ann_file}: image entry #{i} {str(img)[:80]} has no integer 'id'")
                continue
            problem = self._image_problem(img)
            if problem is None and img_id in first_entry:
                # the earlier entry (kept, or already reported) owns the id and its annotations
                self._invalid(f"{self.ann_file}: image id {img_id} (entry #{i} of 'images') repeats the id of entry "
                              f"#{first_entry[img_id]} (expected unique image ids); the earlier entry is kept")
                continue
            first_entry.setdefault(img_id, i)
            if problem is not None:
                self._invalid(f"{self.ann_file}: image id {img_id} (entry #{i} of 'images') {problem}")
                dropped_images.add(img_id)
                continue
            path = os.path.join(self.img_prefix, img['file_name'])
            if not os.path.isfile(path):
                self._invalid(f'{path}: image file not found (image id {img_id} of {self.ann_file}; file_name '
                              f'is joined to data_prefix.img={self.img_prefix!r})')
                dropped_images.add(img_id)
                continue
            records[img_id] = dict(img_id=img_id, img_path=path, height=int(img['height']), width=int(img['width']),
                                   instances=[])

        ann_ids = set()
        for i, ann in enumerate(data['annotations']):
            ann_id = ann.get('id') if isinstance(ann, dict) else None
            if not _is_int(ann_id):
                self._invalid(f"{self.ann_file}: annotation entry #{i} {str(ann)[:80]} has no integer 'id'")
                continue
            img_id = ann.get('image_id')
            if _is_int(img_id) and img_id in dropped_images:
                continue  # its image was reported and dropped already
            problem = self._annotation_problem(ann, records)
            if problem is None and ann_id in ann_ids:
                problem = 'repeats the id of an earlier annotation (expected unique annotation ids)'
            ann_ids.add(ann_id)
            if problem is not None:
                self._invalid(f'{self.ann_file}: annotation id {ann_id} (image id {img_id}) {problem}')
                continue
            label = self.cat2label.get(ann['category_id'])
            if label is None:
                continue  # a category left out by metainfo.classes
            record = records[img_id]
            x, y, w, h = (float(v) for v in ann['bbox'])
            box = [max(x, 0.0), max(y, 0.0), min(x + w, float(record['width'])), min(y + h, float(record['height']))]
            segm = ann.get('segmentation')
            record['instances'].append(dict(bbox=box, bbox_label=label, ignore_flag=int(bool(ann.get('iscrowd', 0))),
                                            mask=segm if segm else None, ann_id=ann_id))
        return list(records.values())

    def _annotation_problem(self, ann: dict, records: Dict[int, dict]) -> Optional[str]:
        img_id = ann.get('image_id')
        if not _is_int(img_id):
            return f"has image_id={img_id!r} (expected the integer id of an entry of 'images')"
        record = records.get(img_id)
        if record is None:
            return "refers to an image id that is not in 'images'"
        cat_id = ann.get('category_id')
        if not _is_int(cat_id) or cat_id not in self._all_cat_ids:
            return (f"has unknown category_id {cat_id!r} (expected one of the ids in 'categories': "
                    f"{_preview(sorted(self._all_cat_ids))})")
        bbox = ann.get('bbox')
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            return f'has bbox={str(bbox)[:80]} (expected [x, y, width, height], four finite numbers)'
        x, y, w, h = bbox
        width, height = record['width'], record['height']
        if w <= 0 or h <= 0:
            return f'has bbox {list(bbox)} with non-positive width or height (expected [x, y, width, height])'
        tol = _BOX_TOLERANCE
        clipped_w, clipped_h = min(x + w, width) - max(x, 0), min(y + h, height) - max(y, 0)
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol or clipped_w <= 0 or clipped_h <= 0:
            return (f'has bbox {list(bbox)} outside its {width}x{height} image (expected [x, y, width, height] '
                    f'within the image, up to {tol:g} px outside)')
        if ann.get('iscrowd', 0) not in (0, 1):
            return f"has iscrowd={ann['iscrowd']!r} (expected 0 or 1)"
        segm = ann.get('segmentation')
        if segm is not None and not _segmentation_ok(segm, height, width):
            return (f'has a malformed segmentation {str(segm)[:80]} (expected a list of polygons [x1, y1, x2, y2, '
                    f"...] or an RLE dict with 'counts' and size [{height}, {width}])")
        return None

    def _filter(self, records: List[dict]) -> List[dict]:
        """mmdet's ``filter_data``: images with annotations of the selected classes and a large enough short side."""
        min_size = self.filter_cfg['min_size']
        keep_empty = not self.filter_cfg['filter_empty_gt']
        return [r for r in records if (keep_empty or r['instances']) and min(r['width'], r['height']) >= min_size]

    # -------------------------------------------------------------------------------------------------- access
    @property
    def metainfo(self) -> dict:
        return dict(classes=self.classes, cat_ids=list(self.cat_ids), ann_file=self.ann_file)

    def __len__(self) -> int:
        return len(self._ends)

    def get_data_info(self, idx: int) -> dict:
        """The raw record of image ``idx`` (a fresh copy: the pipeline may change it freely)."""
        idx = range(len(self))[idx]
        start = int(self._ends[idx - 1]) if idx > 0 else 0
        return pickle.loads(self._buffer[start:int(self._ends[idx])].tobytes())

    def _prepare(self, i: int):
        return self.pipeline(self.get_data_info(i))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(ann_file={self.ann_file!r}, images={len(self)}, '
                f'classes={len(self.classes)}, test_mode={self.test_mode})')


def _segmentation_ok(segm, height: int, width: int) -> bool:
    """Structure of COCO polygons (list of number lists) or RLE (``counts`` str/list and ``size`` of the image).

    Polygons with fewer than 3 points are accepted here; ``LoadAnnotations`` ignores them as mmdet does.
    """
    if isinstance(segm, list):
        return all(isinstance(p, list) and _finite_numbers(p) for p in segm)
    if isinstance(segm, dict):
        return isinstance(segm.get('counts'), (str, list)) and list(segm.get('size') or ()) == [height, width]
    return False
