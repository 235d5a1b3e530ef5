"""ImageFolder-style classification dataset: ``root/<class_name>/<image>``."""
import os
from typing import Callable, Optional, Sequence, Union

from PIL import Image, UnidentifiedImageError

from ..registry import DATASETS
from ..utils.errors import DatasetError
from .base import SampleDataset
from .image_io import read_rgb8

__all__ = ['ImageFolderDataset', 'IMG_EXTENSIONS']

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.ppm', '.pgm')


@DATASETS.register_module()
class ImageFolderDataset(SampleDataset):
    """Classification dataset over class sub-folders.

    Items are ``dict(inputs=<transformed image>, data_samples=dict(gt_label=int, img_path=str))`` so that the
    default collate function batches them for ``ImageClassifier``.

    Args:
        data_root: folder with one sub-folder of images per class.
        pipeline: transform config (e.g. ``dict(type='TimmTransform', input_size=224)``) or a callable on a
            PIL RGB image, or a list of them applied in order (see :func:`~visionzoo.datasets.base.build_pipeline`).
        metainfo: ``dict(classes=[...])`` picks and orders the class folders; by default every sub-folder, sorted.
        skip_corrupt: when an image cannot be decoded, warn and use the next readable image instead of raising
            (the loop of :class:`~visionzoo.datasets.base.SampleDataset`).
    """

    def __init__(self, data_root: str, pipeline: Union[Sequence, dict, Callable, None] = None,
                 metainfo: Optional[dict] = None, skip_corrupt: bool = False):
        self.data_root = data_root
        self.skip_corrupt = skip_corrupt
        self._init_sample_dataset(pipeline, skip=skip_corrupt, skip_option='skip_corrupt=True', source=data_root)
        classes: Optional[Sequence[str]] = (metainfo or {}).get('classes')
        if not data_root or not os.path.isdir(data_root):
            raise DatasetError(f'data_root: dataset folder not found: {data_root!r} (expected a folder with one '
                               f'sub-folder of images per class)')
        found = sorted(e.name for e in os.scandir(data_root) if e.is_dir() and not e.name.startswith('.'))
        if classes is None:
            classes = found
        else:
            missing = [c for c in classes if c not in found]
            if missing:
                raise DatasetError(f'{data_root}: class folder(s) {missing} from metainfo.classes not found '
                                   f'(folders present: {found})')
        self.classes = tuple(classes)
        self.samples = []
        for label, name in enumerate(self.classes):
            folder = os.path.join(data_root, name)
            for dirpath, _, files in sorted(os.walk(folder)):
                for f in sorted(files):
                    if f.lower().endswith(IMG_EXTENSIONS):
                        self.samples.append((os.path.join(dirpath, f), label))
        if not self.samples:
            raise DatasetError(f'{data_root}: no images found (expected <class_name>/<image> files with extensions '
                               f'{", ".join(IMG_EXTENSIONS)})')

    @property
    def metainfo(self) -> dict:
        return dict(classes=self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: str) -> Image.Image:
        try:
            return read_rgb8(path)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DatasetError(f'{path}: cannot read image ({type(e).__name__}: {e}); expected a readable image '
                               f'file') from None

    def _prepare(self, i: int) -> dict:
        path, label = self.samples[i]
        return dict(inputs=self.pipeline(self._load(path)), data_samples=dict(gt_label=label, img_path=path))
