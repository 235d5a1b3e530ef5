"""Datasets, transforms and the embedded shapes data."""
from .image_folder import IMG_EXTENSIONS, ImageFolderDataset
from .shapes import SHAPES_CLASSES, make_shapes, shapes_root
from .shapes_dataset import ShapesClsDataset
from .transforms import TimmTransform

__all__ = [
    'ImageFolderDataset', 'IMG_EXTENSIONS', 'TimmTransform', 'SHAPES_CLASSES', 'make_shapes', 'shapes_root',
    'ShapesClsDataset',
]
