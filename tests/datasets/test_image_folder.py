"""ImageFolder dataset: layout, class selection, and clear errors for missing, empty or corrupt data."""
import shutil

import pytest
import torch

from visionzoo.datasets import ImageFolderDataset, TimmTransform
from visionzoo.utils.errors import DatasetError


def test_layout_labels_and_transform(tiny_shapes):
    ds = ImageFolderDataset(tiny_shapes['cls_train'], pipeline=dict(type='TimmTransform', input_size=32))
    assert ds.metainfo['classes'] == tuple(tiny_shapes['classes'])
    assert len(ds) == 12 * len(tiny_shapes['classes'])
    item = ds[len(ds) - 1]
    assert item['inputs'].shape == (3, 32, 32) and item['inputs'].dtype == torch.float32
    assert item['data_samples']['gt_label'] == len(tiny_shapes['classes']) - 1
    assert item['data_samples']['img_path'].endswith('.png')


def test_metainfo_classes_select_and_order(tiny_shapes):
    classes = tuple(reversed(tiny_shapes['classes'][:2]))
    ds = ImageFolderDataset(tiny_shapes['cls_train'], metainfo=dict(classes=classes))
    assert ds.metainfo['classes'] == classes and len(ds) == 24
    assert ds[0]['data_samples']['img_path'].split('/')[-2] == classes[0]
    with pytest.raises(DatasetError, match="class folder.*'giraffe'"):
        ImageFolderDataset(tiny_shapes['cls_train'], metainfo=dict(classes=['giraffe']))


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match='data_root: dataset folder not found: .*nowhere'):
        ImageFolderDataset(str(tmp_path / 'nowhere'))


def test_empty_folder(tmp_path):
    (tmp_path / 'cats').mkdir()
    (tmp_path / 'cats' / 'readme.txt').write_text('no images here')
    with pytest.raises(DatasetError, match='no images found'):
        ImageFolderDataset(str(tmp_path))


def _copy_with_corrupt(src, dst):
    shutil.copytree(src, dst)
    bad = dst / 'circle' / 'zz_broken.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)
    return bad


def test_corrupt_image_names_the_file(tiny_shapes, tmp_path):
    bad = _copy_with_corrupt(tiny_shapes['cls_train'], tmp_path / 'data')
    ds = ImageFolderDataset(str(tmp_path / 'data'))
    idx = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(DatasetError, match=f'{bad}: cannot read image.*skip_corrupt=True'):
        ds[idx]


def test_skip_corrupt_warns_and_returns_the_next_image(tiny_shapes, tmp_path):
    bad = _copy_with_corrupt(tiny_shapes['cls_train'], tmp_path / 'data')
    ds = ImageFolderDataset(str(tmp_path / 'data'), skip_corrupt=True, pipeline=TimmTransform(input_size=32))
    idx = [p for p, _ in ds.samples].index(str(bad))
    with pytest.warns(UserWarning, match='zz_broken.png'):
        item = ds[idx]
    assert item['data_samples']['img_path'] == ds.samples[idx + 1][0]
    assert item['inputs'].shape == (3, 32, 32)
