"""Semantic-segmentation data: SegDataset / ADE20KDataset records and label loading (reduce_zero_label, palette and
16-bit PNGs), the shapes semantic split against the detection masks, the transforms' geometry (image and label stay
aligned through resize, flip and crop; cat_max_ratio), PackSegInputs, and one clear DatasetError (or a warning with
on_invalid='skip') for each kind of bad input."""
import os
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_SHAPES
from visionzoo.datasets import ADE20KDataset, SegDataset, ShapesDetDataset, ShapesSegDataset, det_collate
from visionzoo.datasets.det_transforms import LoadAnnotations, RandomFlip, Resize
from visionzoo.datasets.seg_transforms import (PackSegInputs, PhotoMetricDistortion, RandomCrop, RandomResize,
                                               read_label_map)
from visionzoo.datasets.shapes_dataset import SHAPES_SEG_CLASSES
from visionzoo.registry import DATASETS, TRANSFORMS
from visionzoo.utils.errors import ConfigError, DatasetError

pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

# a distinct colour per label value (255 = ignore): the image shows its label map, so alignment is checkable pixelwise
COLORS = {0: (200, 30, 30), 1: (30, 200, 30), 2: (30, 30, 200), 3: (220, 220, 30), 4: (30, 220, 220),
          255: (0, 0, 0)}


def _block_label(h=48, w=64):
    """Big rectangles of labels 0-4 and an ignore band: interiors survive a linear resize of the image unchanged."""
    seg = np.zeros((h, w), np.uint8)
    seg[:, w // 2:] = 1
    seg[h // 2:, :w // 4] = 2
    seg[h // 2:, w // 2:3 * w // 4] = 3
    seg[:h // 4, 3 * w // 4:] = 4
    seg[h // 3:h // 3 + 4, :] = 255
    return seg


def _paint(seg):
    img = np.zeros(seg.shape + (3,), np.uint8)
    for v, c in COLORS.items():
        img[seg == v] = c
    return img


def _colors_to_labels(img):
    out = np.full(img.shape[:2], -1, np.int64)
    for v, c in COLORS.items():
        out[(img == np.array(c, np.uint8)).all(-1)] = v
    return out


def _folder(tmp_path, n=3, label_fn=None, classes=5, suffix='.png'):
    """``img/`` (PNG images painting their labels) and ``ann/`` (label PNGs) under tmp_path; returns the kwargs."""
    (tmp_path / 'img' / 'sub').mkdir(parents=True, exist_ok=True)
    (tmp_path / 'ann' / 'sub').mkdir(parents=True, exist_ok=True)
    for i in range(n):
        seg = label_fn(i) if label_fn else np.roll(_block_label(), 7 * i, axis=1)
        name = f'sub/{i:03d}' if i == n - 1 else f'{i:03d}'  # one in a sub-folder: the scan is recursive
        cv2.imwrite(str(tmp_path / 'img' / f'{name}{suffix}'), _paint(seg)[..., ::-1])
        cv2.imwrite(str(tmp_path / 'ann' / f'{name}.png'), seg)
    return dict(data_root=str(tmp_path), data_prefix=dict(img_path='img', seg_map_path='ann'), img_suffix=suffix,
                metainfo=dict(classes=tuple(f'c{k}' for k in range(classes))))


LOAD = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]


def test_seg_dataset_records_and_loading(tmp_path):
    kw = _folder(tmp_path)
    ds = DATASETS.build(dict(type='SegDataset', pipeline=LOAD, **kw))
    assert isinstance(ds, SegDataset) and len(ds) == 3
    rec = ds.get_data_info(2)
    assert rec['img_path'] == os.path.join(str(tmp_path), 'img', 'sub', '002.png')
    assert rec['seg_map_path'] == os.path.join(str(tmp_path), 'ann', 'sub', '002.png')
    assert [os.path.basename(ds.get_data_info(i)['img_path']) for i in range(3)] == ['000.png', '001.png', '002.png']
    res = ds[1]
    assert res['gt_seg_map'].dtype == np.uint8
    assert np.array_equal(res['gt_seg_map'], np.roll(_block_label(), 7, axis=1))
    assert np.array_equal(_colors_to_labels(res['img']), res['gt_seg_map'])
    meta = ds.metainfo
    assert meta['classes'] == ('c0', 'c1', 'c2', 'c3', 'c4') and meta['ignore_index'] == 255
    # no palette given: mmseg's seeded random one
    assert meta['palette'] == np.random.RandomState(42).randint(0, 255, (5, 3)).tolist()


def test_reduce_zero_label_palette_and_16bit(tmp_path):
    seg = np.array([[0, 1, 2], [3, 255, 1]], np.uint8)
    im = Image.fromarray(seg, mode='P')
    im.putpalette([v for k in range(256) for v in (k, 255 - k, 7)])  # colours != indices
    im.save(tmp_path / 'p.png')
    assert np.array_equal(read_label_map(str(tmp_path / 'p.png')), seg)
    res = LoadAnnotations(reduce_zero_label=True)(dict(seg_map_path=str(tmp_path / 'p.png')))
    assert res['gt_seg_map'].tolist() == [[255, 0, 1], [2, 255, 0]] and res['reduce_zero_label'] is True
    assert 'gt_bboxes' not in res  # a segmentation record gets no detection keys
    # the record's reduce_zero_label is used unless the transform sets it
    res = LoadAnnotations()(dict(seg_map_path=str(tmp_path / 'p.png'), reduce_zero_label=True))
    assert res['gt_seg_map'].tolist() == [[255, 0, 1], [2, 255, 0]]
    res = LoadAnnotations()(dict(seg_map_path=str(tmp_path / 'p.png')))
    assert res['gt_seg_map'].tolist() == seg.tolist()
    # 16-bit PNG: read raw, not rescaled to 8 bit
    big = np.array([[0, 300], [65535, 7]], np.uint16)
    cv2.imwrite(str(tmp_path / 'w.png'), big)
    got = read_label_map(str(tmp_path / 'w.png'))
    assert got.dtype == np.uint16 and got.tolist() == big.tolist()
    Image.new('RGB', (3, 2)).save(tmp_path / 'rgb.png')
    with pytest.raises(DatasetError, match='rgb.png.*one-channel'):
        read_label_map(str(tmp_path / 'rgb.png'))


def test_classes_subset_remaps_like_mmseg(tmp_path):
    """A subset of ADE20K's classes: label_map old -> new, left-out classes become ignore (mmseg's get_label_map)."""
    (tmp_path / 'images').mkdir()
    (tmp_path / 'annotations').mkdir()
    seg = np.array([[0, 1, 2, 3, 150]], np.uint8)  # raw ADE ids: 0 other, 1 wall, 2 building, 3 sky, 150 flag
    cv2.imwrite(str(tmp_path / 'images' / 'a.jpg'), np.zeros((1, 5, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'annotations' / 'a.png'), seg)
    prefix = dict(img_path='images', seg_map_path='annotations')
    full = ADE20KDataset(data_root=str(tmp_path), data_prefix=prefix, pipeline=LOAD)
    assert len(full.metainfo['classes']) == 150 and full.metainfo['classes'][7] == 'bed '
    assert full.metainfo['palette'][0] == [120, 120, 120] and full.metainfo['palette'][-1] == [92, 0, 255]
    assert full[0]['gt_seg_map'].tolist() == [[255, 0, 1, 2, 149]]
    sub = ADE20KDataset(data_root=str(tmp_path), data_prefix=prefix, pipeline=LOAD,
                        metainfo=dict(classes=('sky', 'wall')))
    assert sub.metainfo['palette'] == [[6, 230, 230], [120, 120, 120]]
    assert sub[0]['gt_seg_map'].tolist() == [[255, 1, 255, 0, 255]]
    with pytest.raises(ConfigError, match='not classes of ADE20KDataset'):
        ADE20KDataset(data_root=str(tmp_path), data_prefix=prefix, metainfo=dict(classes=('wall', 'unicorn')))
    with pytest.raises(ConfigError, match='fixed'):
        ADE20KDataset(data_root=str(tmp_path), data_prefix=prefix, reduce_zero_label=False)


def test_shapes_seg_split_matches_detection_masks(tiny_shapes):
    common = dict(data_root=tiny_shapes['data_root'], shapes_cfg=TINY_SHAPES)
    seg_ds = DATASETS.build(dict(type='ShapesSegDataset', split='val', pipeline=LOAD, **common))
    det_ds = ShapesDetDataset(split='val', pipeline=[dict(type='LoadImageFromFile'),
                                                     dict(type='LoadAnnotations', with_mask=True)], **common)
    assert seg_ds.metainfo['classes'] == SHAPES_SEG_CLASSES == ('background',) + det_ds.metainfo['classes']
    assert len(seg_ds) == len(det_ds) == TINY_SHAPES['det_val']
    for i in range(len(seg_ds)):
        s, d = seg_ds[i], det_ds[i]
        assert s['img_path'] == d['img_path'] and np.array_equal(s['img'], d['img'])
        expected = np.zeros(d['img'].shape[:2], np.uint8)
        for mask, label in zip(d['gt_masks'], d['gt_bboxes_labels']):
            assert not expected[mask > 0].any()  # the visible masks of the shapes are disjoint
            expected[mask > 0] = label + 1
        assert np.array_equal(s['gt_seg_map'], expected)
        assert len(np.unique(expected)) > 1
    # cached: a second build reuses the PNGs
    folder = os.path.dirname(seg_ds.get_data_info(0)['seg_map_path'])
    mtime = os.stat(seg_ds.get_data_info(0)['seg_map_path']).st_mtime_ns
    again = ShapesSegDataset(split='val', **common)
    assert os.path.dirname(again.get_data_info(0)['seg_map_path']) == folder
    assert os.stat(again.get_data_info(0)['seg_map_path']).st_mtime_ns == mtime


@pytest.mark.parametrize('direction', ['horizontal', 'vertical'])
def test_resize_and_flip_keep_image_and_label_aligned(tmp_path, direction):
    ds = SegDataset(pipeline=LOAD, **_folder(tmp_path, n=1))
    res = ds[0]
    seg0 = res['gt_seg_map'].copy()
    res = Resize(scale=(128, 96), keep_ratio=True)(res)  # 64x48 -> exactly 2x
    assert res['gt_seg_map'].shape == (96, 128) and res['scale_factor'] == (2.0, 2.0)
    assert np.array_equal(res['gt_seg_map'], np.repeat(np.repeat(seg0, 2, 0), 2, 1))
    res = RandomFlip(prob=1.0, direction=direction)(res)
    axis = 1 if direction == 'horizontal' else 0
    assert np.array_equal(res['gt_seg_map'], np.flip(np.repeat(np.repeat(seg0, 2, 0), 2, 1), axis))
    # the image's colours still say the label of each pixel, away from the blurred block edges
    seen = _colors_to_labels(res['img'])
    known = seen >= 0
    assert known.mean() > 0.8 and np.array_equal(seen[known], res['gt_seg_map'][known].astype(np.int64))
    # an odd keep-ratio resize (mmcv's rescale_size rounding) keeps the seg map the image's size
    res = Resize(scale=(50, 37), keep_ratio=True)(ds[0])
    s = min(50 / 64, 37 / 48)
    assert res['img'].shape[:2] == res['gt_seg_map'].shape == (int(48 * s + 0.5), int(64 * s + 0.5)) == (37, 49)


def test_random_resize_draws_mmcv_scales(tmp_path):
    ds = SegDataset(pipeline=LOAD, **_folder(tmp_path, n=1))
    t = TRANSFORMS.build(dict(type='RandomResize', scale=(256, 64), ratio_range=(0.5, 2.0), keep_ratio=True))
    for seed in range(5):
        np.random.seed(seed)
        ratio = np.random.random_sample() * 1.5 + 0.5
        w, h = int(256 * ratio), int(64 * ratio)
        s = min(max(w, h) / 64, min(w, h) / 48)  # long side <= max(scale), short side <= min(scale)
        np.random.seed(seed)
        res = t(ds[0])
        assert res['img'].shape[:2] == res['gt_seg_map'].shape == (int(48 * s + 0.5), int(64 * s + 0.5))
    t = RandomResize(scale=[(40, 30), (80, 60)], keep_ratio=False)
    np.random.seed(3)
    w, h = np.random.randint(40, 81), np.random.randint(30, 61)
    np.random.seed(3)
    assert t(ds[0])['gt_seg_map'].shape == (h, w)
    with pytest.raises(ConfigError, match='two'):
        RandomResize(scale=(40, 30))


def test_random_crop_geometry_and_cat_max_ratio(tmp_path):
    ds = SegDataset(pipeline=LOAD, **_folder(tmp_path, n=1))
    full = ds[0]
    np.random.seed(0)
    for _ in range(5):
        res = RandomCrop(crop_size=(20, 30))(ds[0])  # (h, w), as in mmseg
        assert res['img'].shape[:2] == res['gt_seg_map'].shape == res['img_shape'] == (20, 30)
        # find where it came from: a window of the full map, with the image cut at the same place
        hits = [(y, x) for y in range(29) for x in range(35)
                if np.array_equal(full['gt_seg_map'][y:y + 20, x:x + 30], res['gt_seg_map'])
                and np.array_equal(full['img'][y:y + 20, x:x + 30], res['img'])]
        assert hits
    # crop larger than the image: the whole image (padding is the data preprocessor's job)
    assert RandomCrop(crop_size=100)(ds[0])['gt_seg_map'].shape == (48, 64)

    # cat_max_ratio: 12 px wide stripes of classes 0 and 1, ignored at the right (ignore never counts as a class);
    # about a third of the 10x10 windows hold both classes with neither at 75% or more
    seg = np.repeat(((np.arange(40) // 12) % 2)[None].astype(np.uint8), 40, 0)
    seg[:, 34:] = 255

    def ratios(cat_max_ratio, seed):
        np.random.seed(seed)
        out = RandomCrop(crop_size=(10, 10), cat_max_ratio=cat_max_ratio)(dict(img=_paint(seg), gt_seg_map=seg))
        labels, counts = np.unique(out['gt_seg_map'], return_counts=True)
        counts = counts[labels != 255]
        return len(counts), counts.max() / max(counts.sum(), 1)

    free = [ratios(1.0, s) for s in range(30)]
    assert sum(n > 1 and r < 0.75 for n, r in free) < 15  # unconstrained crops qualify about 1 time in 3
    kept = [ratios(0.75, s) for s in range(30)]
    assert sum(n > 1 and r < 0.75 for n, r in kept) >= 27  # redrawn up to 10 times until they do
    with pytest.raises(ConfigError, match='cat_max_ratio'):
        RandomCrop(crop_size=10, cat_max_ratio=0)
    with pytest.raises(ConfigError, match=r'RandomCrop.crop_size: .*\(height, width\)'):
        RandomCrop(crop_size=(10, 0))


def test_photometric_distortion_changes_colours_only(tmp_path):
    ds = SegDataset(pipeline=LOAD, **_folder(tmp_path, n=1))
    t = TRANSFORMS.build(dict(type='PhotoMetricDistortion'))
    assert isinstance(t, PhotoMetricDistortion) and TRANSFORMS.get('PackSegInputs') is PackSegInputs
    changed = 0
    for seed in range(4):
        np.random.seed(seed)
        a = t(ds[0])
        np.random.seed(seed)
        b = t(ds[0])
        assert np.array_equal(a['img'], b['img'])  # numpy's global RNG, as mmseg
        assert a['img'].dtype == np.uint8 and a['img'].shape == (48, 64, 3)
        assert np.array_equal(a['gt_seg_map'], ds[0]['gt_seg_map'])
        changed += not np.array_equal(a['img'], ds[0]['img'])
    assert changed >= 3
    # mmseg's steps written out on the BGR image (mmcv's colour order): the RGB version must give the same pixels
    for seed in range(6):
        np.random.seed(seed)
        expected = _mmseg_photometric(ds[0]['img'][..., ::-1].copy())[..., ::-1]
        np.random.seed(seed)
        assert np.array_equal(t(ds[0])['img'], expected)


def _mmseg_photometric(bgr):
    """PhotoMetricDistortion with mmseg's defaults, step by step in mmseg's order and RNG calls, on a BGR image."""
    def convert(x, alpha=1, beta=0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def contrast(x):
        return convert(x, alpha=np.random.uniform(0.5, 1.5)) if np.random.randint(2) else x

    if np.random.randint(2):
        bgr = convert(bgr, beta=np.random.uniform(-32, 32))
    mode = np.random.randint(2)
    if mode == 1:
        bgr = contrast(bgr)
    if np.random.randint(2):
        hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=np.random.uniform(0.5, 1.5))
        bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if np.random.randint(2):
        hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + np.random.randint(-18, 18)) % 180
        bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0:
        bgr = contrast(bgr)
    return bgr


def test_pack_seg_inputs_and_collate(tiny_shapes):
    pipeline = [*LOAD, dict(type='RandomResize', scale=(96, 96), ratio_range=(0.5, 1.5)),
                dict(type='RandomCrop', crop_size=(48, 48), cat_max_ratio=0.75), dict(type='RandomFlip', prob=0.5),
                dict(type='PhotoMetricDistortion'), dict(type='PackSegInputs')]
    ds = ShapesSegDataset(split='train', data_root=tiny_shapes['data_root'], shapes_cfg=TINY_SHAPES,
                          pipeline=pipeline)
    np.random.seed(0)
    batch = det_collate([ds[0], ds[1]])
    for inputs, s in zip(batch['inputs'], batch['data_samples']):
        assert inputs.dtype == torch.uint8 and inputs.shape[0] == 3
        assert s['gt_sem_seg'].dtype == torch.int64 and s['gt_sem_seg'].shape == inputs.shape[1:]
        assert set(s) == {'img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                          'flip_direction', 'reduce_zero_label', 'gt_sem_seg'}
        assert s['ori_shape'] == (64, 64) and s['img_shape'] == tuple(inputs.shape[1:])
        assert s['reduce_zero_label'] is False and int(s['gt_sem_seg'].max()) < len(SHAPES_SEG_CLASSES)
    # mmseg's test pipeline: Resize first, then LoadAnnotations, which keeps the label map at the original size
    test_ds = ShapesSegDataset(split='val', data_root=tiny_shapes['data_root'], shapes_cfg=TINY_SHAPES, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 96)), dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')])
    item = test_ds[0]
    assert item['inputs'].shape == (3, 96, 96) and item['data_samples']['gt_sem_seg'].shape == (64, 64)
    assert item['data_samples']['scale_factor'] == (1.5, 1.5)
    # test pipeline: no transforms ran, defaults filled in
    plain = ShapesSegDataset(split='val', data_root=tiny_shapes['data_root'], shapes_cfg=TINY_SHAPES,
                             pipeline=[*LOAD, dict(type='PackSegInputs')])
    s = plain[0]['data_samples']
    assert (s['scale_factor'], s['flip'], s['flip_direction']) == ((1.0, 1.0), False, None)
    assert torch.equal(s['gt_sem_seg'], torch.from_numpy(read_label_map(s['seg_map_path']).astype(np.int64)))


# ------------------------------------------------------------------------------------------------------ bad input
def test_label_of_another_size(tmp_path):
    kw = _folder(tmp_path)
    cv2.imwrite(str(tmp_path / 'ann' / '001.png'), np.zeros((10, 10), np.uint8))
    ds = SegDataset(pipeline=LOAD, **kw)
    with pytest.raises(DatasetError, match=r'ann/001\.png: the label map is 10x10 but its image .*img/001\.png is '
                                           r'64x48'):
        ds[1]
    skipping = SegDataset(pipeline=LOAD, on_invalid='skip', **kw)
    with pytest.warns(UserWarning, match=r'skipping unreadable image: .*001\.png'):
        assert skipping[1]['img_path'].endswith('002.png')


@pytest.mark.parametrize('reduce_zero_label', [False, True])
def test_label_values_out_of_range(tmp_path, reduce_zero_label):
    kw = _folder(tmp_path, classes=4)  # labels 0-4 and 255: 4 is one too many
    if reduce_zero_label:  # then 0 -> 255, 1..4 -> 0..3: all fine, unless a raw 6 is there (-> 5)
        bad = _block_label()
        bad[0, 0] = 6
        cv2.imwrite(str(tmp_path / 'ann' / '000.png'), bad)
    ds = SegDataset(pipeline=LOAD, reduce_zero_label=reduce_zero_label, **kw)
    value, after = (5, 'after reduce_zero_label ') if reduce_zero_label else (4, '')
    with pytest.raises(DatasetError, match=rf'ann/000\.png: label values \[{value}\] are out of range {after}\('
                                           r'expected class ids in \[0, 4\) or ignore_index=255\)'):
        ds[0]
    if reduce_zero_label:
        assert ds[1]['gt_seg_map'].max() == 255


def test_image_without_label(tmp_path):
    kw = _folder(tmp_path)
    os.remove(tmp_path / 'ann' / '001.png')
    with pytest.raises(DatasetError, match=r'img/001\.png: the image has no label map \(expected .*ann/001\.png\); '
                                           r"set on_invalid='skip'"):
        SegDataset(**kw)
    with pytest.warns(UserWarning, match=r'001\.png: the image has no label map'):
        ds = SegDataset(on_invalid='skip', **kw)
    assert len(ds) == 2
    # images without labels are fine when no label folder is given (inference)
    assert len(SegDataset(**dict(kw, data_prefix=dict(img_path='img', seg_map_path=None)))) == 3


def test_empty_or_missing_folders(tmp_path):
    (tmp_path / 'img').mkdir()
    (tmp_path / 'ann').mkdir()
    kw = dict(data_root=str(tmp_path), data_prefix=dict(img_path='img', seg_map_path='ann'),
              metainfo=dict(classes=('a', 'b')))
    with pytest.raises(DatasetError, match=r"img: no images ending with '\.jpg'"):
        SegDataset(**kw)
    with pytest.raises(DatasetError, match='nowhere: image folder not found'):
        SegDataset(**dict(kw, data_prefix=dict(img_path='nowhere', seg_map_path='ann')))
    cv2.imwrite(str(tmp_path / 'img' / 'a.jpg'), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match='nolabels: label folder not found'):
        SegDataset(**dict(kw, data_prefix=dict(img_path='img', seg_map_path='nolabels')))


def test_bad_metainfo(tmp_path):
    kw = _folder(tmp_path, n=1)
    with pytest.raises(ConfigError, match=r'metainfo.palette: 2 entries for 5 classes'):
        SegDataset(**dict(kw, metainfo=dict(classes=kw['metainfo']['classes'], palette=[[0, 0, 0], [1, 1, 1]])))
    with pytest.raises(ConfigError, match='metainfo.classes'):
        SegDataset(**dict(kw, metainfo=None))
    with pytest.raises(ConfigError, match='on_invalid'):
        SegDataset(on_invalid='ignore', **kw)
    with pytest.raises(ConfigError, match='data_prefix'):
        SegDataset(**dict(kw, data_prefix=dict(img='img')))


def test_undecodable_label(tmp_path):
    kw = _folder(tmp_path, n=1)
    (tmp_path / 'ann' / 'sub' / '000.png').write_bytes(b'not a png')
    with pytest.raises(DatasetError, match=r'000\.png: cannot decode the label map'):
        SegDataset(pipeline=LOAD, **kw)[0]
    with warnings.catch_warnings(record=True), pytest.raises(DatasetError, match='none of the 1 images'):
        SegDataset(pipeline=LOAD, on_invalid='skip', **kw)[0]
