"""ImageNet-1k in its usual layouts, with timm's class order and names.

* ``<data_root>/<split>/<wnid>/<image>``: one folder per synset (``train/`` as released, ``val/`` after the usual
  re-sorting script).
* ``<data_root>/<split>/<image>`` (flat, as ``ILSVRC2012_img_val.tar`` unpacks) with a label file:
  ``ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID, 1..1000, per image in sorted file-name order;
  the ids follow the devkit's synset order, read from its ``data/meta.mat`` or from a text file of 1000 wnids), or a
  ``file label`` list as mmpretrain's ``meta/val.txt`` (labels 0..999 in the sorted-wnid order, files relative to
  the split folder). ``meta/<split>.txt`` is used when present and no ``ann_file`` is given.

Labels are indices into timm's ImageNet-1k synset list (``timm.data.ImageNetInfo``: the sorted wnids, the output
order of every ImageNet classifier); class names are timm's descriptions of them.
"""
import os
from typing import Callable, List, Optional, Sequence, Tuple, Union

from ..registry import DATASETS
from ..utils.errors import DatasetError
from .image_folder import IMG_EXTENSIONS, ImageFolderDataset

__all__ = ['ImageNetDataset', 'imagenet_synsets', 'read_devkit_synsets', 'GROUND_TRUTH_FILE']

GROUND_TRUTH_FILE = 'ILSVRC2012_validation_ground_truth.txt'
_NUM_CLASSES = 1000


def imagenet_synsets() -> Tuple[List[str], List[str]]:
    """(wnids, descriptions) of ImageNet-1k in timm's order (``ImageNetInfo('imagenet-1k')``)."""
    from timm.data import ImageNetInfo
    info = ImageNetInfo('imagenet-1k')
    return list(info.label_names()), list(info.label_descriptions())


def _shown(items: Sequence, limit: int = 5) -> str:
    items = list(items)
    return ', '.join(map(str, items[:limit])) + (f', ... ({len(items)} in all)' if len(items) > limit else '')


def read_devkit_synsets(path: str, wnids: Sequence[str]) -> List[str]:
    """The 1000 wnids in ILSVRC2012_ID order (entry ``i`` has id ``i + 1``) from the ILSVRC2012 devkit: its folder
    (``data/meta.mat``), ``meta.mat`` itself (needs scipy), or a text file with one wnid per line."""
    if os.path.isdir(path):
        path = os.path.join(path, 'data', 'meta.mat')
    if not os.path.isfile(path):
        raise DatasetError(f'devkit: file not found: {path} (expected the ILSVRC2012 devkit folder, its '
                           f'data/meta.mat, or a text file of 1000 wnids in ILSVRC2012_ID order)')
    if path.endswith('.mat'):
        try:
            from scipy.io import loadmat
        except ImportError:
            raise DatasetError(f'{path}: reading meta.mat needs scipy (pip install scipy), or pass a text file of '
                               f'1000 wnids in ILSVRC2012_ID order as devkit') from None
        # leaf synsets (num_children == 0) are the 1000 classes; field names as in the devkit's meta.mat
        rows = [r for r in loadmat(path, squeeze_me=True)['synsets'] if int(r['num_children']) == 0]
        order = [str(r['WNID']) for r in sorted(rows, key=lambda r: int(r['ILSVRC2012_ID']))]
    else:
        with open(path, encoding='utf-8') as f:
            order = [ln.strip() for ln in f if ln.strip()]
    unknown = [w for w in order if w not in set(wnids)]
    if len(order) != _NUM_CLASSES or unknown or len(set(order)) != _NUM_CLASSES:
        raise DatasetError(f'{path}: expected the {_NUM_CLASSES} distinct ImageNet-1k wnids in ILSVRC2012_ID order, '
                           f'got {len(order)} entries' + (f' with unknown wnids {_shown(unknown)}' if unknown else ''))
    return order


def _image_files(folder: str, recursive: bool) -> List[str]:
    """Image files under ``folder`` as paths relative to it, sorted."""
    if not recursive:
        return sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))
    found = []
    for dirpath, _, files in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        found += [f if rel == '.' else os.path.join(rel, f) for f in files if f.lower().endswith(IMG_EXTENSIONS)]
    return sorted(found)


@DATASETS.register_module()
class ImageNetDataset(ImageFolderDataset):
    """ImageNet-1k classification data (items as :class:`ImageFolderDataset`'s).

    Args:
        data_root: the dataset folder (holding ``train/``, ``val/`` and possibly ``meta/``).
        split: sub-folder of ``data_root`` with the images (``'train'``, ``'val'``); ``''`` for ``data_root`` itself.
        pipeline: transforms, as for :class:`ImageFolderDataset`.
        ann_file: label file of a flat folder (absolute or relative to ``data_root``): the ILSVRC2012 ground truth
            or a ``file label`` list. Default: none for synset folders; ``meta/<split>.txt`` if it exists, or the
            ground truth of ``devkit``.
        devkit: the ILSVRC2012 devkit (folder, ``meta.mat`` or a text file of wnids in id order), for the synset
            order of the ground-truth ids; its folder also provides the ground-truth file.
        synsets: only these classes (wnids) — a subset for quick runs. Their synset folders must exist.
        max_per_class: keep the first N images of each class (in file-name order).
        relabel: with ``synsets``, number the kept classes 0..K-1 in the given order (a K-class model); by default
            labels stay ImageNet-1k indices (a 1000-class model evaluated on a subset).
        skip_corrupt: as for :class:`ImageFolderDataset`.
    """

    def __init__(self, data_root: str, split: str = 'val', pipeline: Union[Sequence, dict, Callable, None] = None,
                 ann_file: Optional[str] = None, devkit: Optional[str] = None, synsets: Optional[Sequence[str]] = None,
                 max_per_class: Optional[int] = None, relabel: bool = False, skip_corrupt: bool = False):
        wnids, descriptions = imagenet_synsets()
        index = {w: i for i, w in enumerate(wnids)}
        wanted = list(wnids) if synsets is None else [synsets] if isinstance(synsets, str) else list(synsets)
        unknown = [w for w in wanted if w not in index]
        if unknown or not wanted:
            raise DatasetError(f'ImageNetDataset(synsets=...): {_shown(unknown) or "no synsets"}: expected '
                               f'ImageNet-1k wnids such as {wnids[0]}')
        if max_per_class is not None and (isinstance(max_per_class, bool) or not isinstance(max_per_class, int)
                                          or max_per_class < 1):
            raise DatasetError(f'ImageNetDataset(max_per_class={max_per_class!r}): expected a positive int or None')
        folder = os.path.join(data_root, split) if split else data_root
        if not data_root or not os.path.isdir(folder):
            raise DatasetError(f'{folder}: ImageNet image folder not found (expected {data_root}/{split} with one '
                               f'folder per synset, or the images and a label file)')
        if ann_file is None and devkit is not None and os.path.isdir(devkit):
            ann_file = os.path.join(devkit, 'data', GROUND_TRUTH_FILE)
        if ann_file is None and os.path.isfile(os.path.join(data_root, 'meta', f'{split}.txt')):
            ann_file = os.path.join('meta', f'{split}.txt')

        if ann_file is None:
            subdirs = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith('.'))
            foreign = [d for d in subdirs if d not in index]
            if foreign:
                raise DatasetError(f'{folder}: folder(s) {_shown(foreign)} are not ImageNet-1k synsets (expected '
                                   f'one folder per wnid, e.g. {wnids[0]}/)')
            if not subdirs:
                raise DatasetError(f'{folder}: no synset folders and no label file (expected <wnid>/<image> '
                                   f'folders, or a flat folder with ann_file=... or meta/{split}.txt)')
            missing = [w for w in wanted if w not in subdirs]
            if missing:
                raise DatasetError(f'{folder}: synset folder(s) {_shown(missing)} missing ({len(wanted) - len(missing)} '
                                   f'of the {len(wanted)} classes present; pass synsets=[...] for a subset)')
            super().__init__(folder, pipeline, metainfo=dict(classes=wanted), skip_corrupt=skip_corrupt)
            samples = [(path, index[wanted[label]]) for path, label in self.samples]
        else:
            self.data_root, self.skip_corrupt = folder, skip_corrupt
            self._init_sample_dataset(pipeline, skip=skip_corrupt, skip_option='skip_corrupt=True', source=folder)
            ann_path = ann_file if os.path.isabs(ann_file) else os.path.join(data_root, ann_file)
            samples = self._read_label_file(ann_path, folder, devkit, wnids, index)
            keep = {index[w] for w in wanted}
            samples = [s for s in samples if s[1] in keep]
        if max_per_class is not None:
            kept, counts = [], {}
            for path, label in samples:
                counts[label] = counts.get(label, 0) + 1
                if counts[label] <= max_per_class:
                    kept.append((path, label))
            samples = kept
        if not samples:
            raise DatasetError(f'{folder}: no images of the {len(wanted)} requested synsets')
        self.synsets = tuple(wanted if relabel else wnids)
        if relabel:
            new = {index[w]: i for i, w in enumerate(wanted)}
            samples = [(path, new[label]) for path, label in samples]
        self.classes = tuple(descriptions[index[w]] for w in self.synsets)
        self.samples = samples

    @property
    def metainfo(self) -> dict:
        return dict(classes=self.classes, synsets=self.synsets)

    @staticmethod
    def _read_label_file(ann_path: str, folder: str, devkit: Optional[str], wnids: Sequence[str],
                         index: dict) -> List[Tuple[str, int]]:
        """(image path, ImageNet-1k index) for each line of a ground-truth or ``file label`` file."""
        if not os.path.isfile(ann_path):
            raise DatasetError(f'ann_file: label file not found: {ann_path}')
        with open(ann_path, encoding='utf-8') as f:
            lines = [(n, ln.strip()) for n, ln in enumerate(f, 1) if ln.strip()]
        if not lines:
            raise DatasetError(f'{ann_path}: empty label file')
        ground_truth = len(lines[0][1].split()) == 1
        images = _image_files(folder, recursive=not ground_truth)
        if len(lines) != len(images):
            raise DatasetError(f'{ann_path}: {len(lines)} labels for {len(images)} images in {folder} (expected one '
                               f'label per image' + (', in sorted file-name order)' if ground_truth else ')'))
        order = None
        if ground_truth:
            if devkit is None:
                raise DatasetError(f'{ann_path}: ILSVRC2012 ground-truth ids follow the devkit synset order; pass '
                                   f'devkit=<ILSVRC2012_devkit_t12 folder, its data/meta.mat, or a text file of the '
                                   f'1000 wnids in ILSVRC2012_ID order>')
            order = read_devkit_synsets(devkit, wnids)
        present = set(images)
        samples = []
        for i, (n, line) in enumerate(lines):
            parts = line.rsplit(maxsplit=1)
            if (len(parts) == 1) != ground_truth or not parts[-1].lstrip('-').isdigit():
                expected = 'one ILSVRC2012_ID per line' if ground_truth else '"<file> <label>" per line'
                raise DatasetError(f'{ann_path}, line {n}: {line!r}: expected {expected}')
            label = int(parts[-1])
            low, high = (1, _NUM_CLASSES) if ground_truth else (0, _NUM_CLASSES - 1)
            if not low <= label <= high:
                raise DatasetError(f'{ann_path}, line {n}: label {label} out of range (expected {low}..{high})')
            if ground_truth:
                rel, label = images[i], index[order[label - 1]]
            else:
                rel = os.path.normpath(parts[0])
                if rel not in present:
                    raise DatasetError(f'{ann_path}, line {n}: image {parts[0]} not found in {folder}')
            samples.append((os.path.join(folder, rel), label))
        return samples
