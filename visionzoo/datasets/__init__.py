"""Datasets, transforms and the embedded shapes data."""
from .base import Compose, build_pipeline
from .coco import CocoDataset
from .det_transforms import LoadAnnotations, LoadImageFromFile, PackDetInputs, RandomFlip, Resize, det_collate
from .image_folder import IMG_EXTENSIONS, ImageFolderDataset
from .imagenet import ImageNetDataset, imagenet_synsets, read_devkit_synsets
from .samplers import AspectRatioBatchSampler
from .seg import ADE20KDataset, SegDataset
from .seg_transforms import PackSegInputs, PhotoMetricDistortion, RandomCrop, RandomResize
from .shapes import SHAPES_CLASSES, make_shapes, shapes_root
from .shapes_dataset import SHAPES_SEG_CLASSES, ShapesClsDataset, ShapesDetDataset, ShapesSegDataset
from .transforms import ModelEvalTransform, TimmTransform

__all__ = [
    'ImageFolderDataset', 'IMG_EXTENSIONS', 'TimmTransform', 'SHAPES_CLASSES', 'make_shapes', 'shapes_root',
    'ShapesClsDataset', 'CocoDataset', 'ShapesDetDataset', 'LoadImageFromFile', 'LoadAnnotations', 'Resize',
    'RandomFlip', 'PackDetInputs', 'det_collate', 'AspectRatioBatchSampler', 'Compose', 'build_pipeline',
    'SegDataset', 'ADE20KDataset', 'ShapesSegDataset', 'SHAPES_SEG_CLASSES', 'RandomResize', 'RandomCrop',
    'PhotoMetricDistortion', 'PackSegInputs', 'ImageNetDataset', 'imagenet_synsets', 'read_devkit_synsets',
    'ModelEvalTransform',
]
