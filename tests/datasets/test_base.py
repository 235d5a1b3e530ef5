"""What ImageFolderDataset and CocoDataset share (visionzoo.datasets.base): the pipeline builder and the
skip-unreadable-sample loop. Each check runs on both datasets and expects the same behaviour from each."""
import os
import re
import shutil
import warnings

import pytest
import torch
from PIL import Image

from visionzoo.datasets import CocoDataset, ImageFolderDataset, TimmTransform
from visionzoo.utils.errors import DatasetError


def _cls_folder(tiny_shapes, tmp_path, n_bad=1):
    """Two classes of two images each; the first ``n_bad`` files (in sample order) are made undecodable."""
    root = tmp_path / 'cls'
    for name in tiny_shapes['classes'][:2]:
        (root / name).mkdir(parents=True)
        for fn in sorted(os.listdir(os.path.join(tiny_shapes['cls_train'], name)))[:2]:
            shutil.copy(os.path.join(tiny_shapes['cls_train'], name, fn), root / name / fn)
    paths = sorted(str(p) for p in root.glob('*/*.png'))
    for p in paths[:n_bad]:
        with open(p, 'r+b') as f:
            f.truncate(100)
    return str(root), paths[:n_bad]


def _det_images(tiny_shapes, tmp_path, n_bad=1):
    """A copy of the tiny detection images; the first ``n_bad`` (image ids 1, 2, ...) are made undecodable."""
    img_dir = tmp_path / 'det'
    shutil.copytree(tiny_shapes['det_train_img'], img_dir)
    paths = sorted(str(p) for p in img_dir.glob('*.png'))
    for p in paths[:n_bad]:
        with open(p, 'r+b') as f:
            f.truncate(100)
    return str(img_dir), paths[:n_bad]


def _image_folder(tiny_shapes, tmp_path, n_bad=1, **kw):
    root, bad = _cls_folder(tiny_shapes, tmp_path, n_bad)
    return (lambda **more: ImageFolderDataset(root, pipeline=TimmTransform(input_size=32), **kw, **more)), bad, root


def _coco(tiny_shapes, tmp_path, n_bad=1, **kw):
    img_dir, bad = _det_images(tiny_shapes, tmp_path, n_bad)
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackDetInputs')]
    return (lambda **more: CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=img_dir),
                                       pipeline=pipeline, **kw, **more)), bad, tiny_shapes['det_train_ann']


# name: (factory, keyword that turns skipping on, path of the image an item came from)
DATASETS = {
    'ImageFolderDataset': (_image_folder, dict(skip_corrupt=True), lambda item: item['data_samples']['img_path']),
    'CocoDataset': (_coco, dict(on_invalid='skip'), lambda item: item['data_samples']['img_path']),
}


# ------------------------------------------------------------------------------------------------ pipeline
BAD_ENTRIES = {  # entry: text the message must contain besides its position
    'a number': (42, '42'),
    'a string': ('Resize', "'Resize'"),
    'no type': (dict(scale=(8, 8)), "{'scale': (8, 8)} has no 'type'"),
    'unknown type': (dict(type='Resise'), "unknown transform type 'Resise' (did you mean: Resize"),
}


def _build_both(tiny_shapes, tmp_path, pipeline):
    """The DatasetError each dataset raises for ``pipeline`` (both must raise one)."""
    root, _ = _cls_folder(tiny_shapes, tmp_path, n_bad=0)
    errors = []
    for build in (lambda: ImageFolderDataset(root, pipeline=pipeline),
                  lambda: CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=tiny_shapes['det_train_img']),
                                      pipeline=pipeline)):
        with pytest.raises(DatasetError) as err:
            build()
        assert type(err.value) is DatasetError
        errors.append(str(err.value))
    return errors


@pytest.mark.parametrize('case', list(BAD_ENTRIES))
def test_same_bad_pipeline_entry_same_error(tiny_shapes, tmp_path, case):
    entry, text = BAD_ENTRIES[case]
    a, b = _build_both(tiny_shapes, tmp_path, [dict(type='LoadImageFromFile'), entry])
    assert a == b
    assert a.startswith('pipeline[1]: ') and text in a and 'expected' in a


def test_pipeline_that_is_not_a_list(tiny_shapes, tmp_path):
    a, b = _build_both(tiny_shapes, tmp_path, 42)
    assert a == b and a.startswith('pipeline: got 42 of type int; expected')


def test_list_pipeline_runs_in_order(tiny_shapes, tmp_path):
    root, _ = _cls_folder(tiny_shapes, tmp_path, n_bad=0)
    ds = ImageFolderDataset(root, pipeline=[dict(type='TimmTransform', input_size=32), torch.neg])
    item = ds[1]
    with Image.open(item['data_samples']['img_path']) as img:
        expected = -TimmTransform(input_size=32)(img.convert('RGB'))
    assert torch.equal(item['inputs'], expected)
    # no pipeline: the decoded image itself
    plain = ImageFolderDataset(root)[1]['inputs']
    assert isinstance(plain, Image.Image) and plain.mode == 'RGB'


# ------------------------------------------------------------------------------------------------ skip loop
@pytest.mark.parametrize('name', list(DATASETS))
def test_unreadable_sample_raises_naming_file_and_option(tiny_shapes, tmp_path, name):
    factory, skip_kw, _ = DATASETS[name]
    make, (bad,), _ = factory(tiny_shapes, tmp_path)
    ds = make()
    with pytest.raises(DatasetError) as err:
        ds[0]
    msg = str(err.value)
    option = '{}={!r}'.format(*next(iter(skip_kw.items())))
    assert type(err.value) is DatasetError and msg.startswith(bad) and option in msg, msg
    assert ds[1] is not None  # the next sample is readable


@pytest.mark.parametrize('name', list(DATASETS))
def test_skip_warns_once_and_returns_the_next_sample(tiny_shapes, tmp_path, name):
    factory, skip_kw, path_of = DATASETS[name]
    make, (bad,), _ = factory(tiny_shapes, tmp_path)
    ds = make(**skip_kw)
    reference = make()  # nothing skipped: sample 1 is readable
    with pytest.warns(UserWarning, match=f'^skipping unreadable image: {re.escape(bad)}') as record:
        item = ds[0]
    assert len(record) == 1
    assert path_of(item) == path_of(reference[1])
    assert torch.equal(item['inputs'], reference[1]['inputs'])
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the bad sample is remembered: no second warning
        assert path_of(ds[0]) == path_of(reference[1])
    # negative indices count from the end; past the end iteration stops
    assert path_of(ds[-1]) == path_of(reference[len(ds) - 1])
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.parametrize('name', list(DATASETS))
def test_nothing_readable(tiny_shapes, tmp_path, name):
    factory, skip_kw, _ = DATASETS[name]
    make, bad, source = factory(tiny_shapes, tmp_path, n_bad=4)
    ds = make(**skip_kw)
    assert len(ds) == len(bad) == 4
    with pytest.warns(UserWarning, match='skipping unreadable image') as record:
        with pytest.raises(DatasetError, match=f'^{re.escape(source)}: none of the 4 images could be read'):
            ds[2]
    assert len(record) == 4
