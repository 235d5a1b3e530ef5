"""COCO detection data: CocoDataset records against the JSON (generated shapes and the real labelme file), the
detection transforms against hand-computed geometry and pycocotools, det_collate, the aspect-ratio batch sampler,
and one clear DatasetError (or a warning with on_invalid='skip') for each kind of bad input."""
import copy
import json
import os
import shutil
import warnings

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, SequentialSampler

from conftest import TINY_SHAPES
from visionzoo.datasets import CocoDataset, ShapesDetDataset
from visionzoo.datasets.det_transforms import (LoadAnnotations, LoadImageFromFile, PackDetInputs, RandomFlip, Resize,
                                               det_collate)
from visionzoo.datasets.samplers import AspectRatioBatchSampler
from visionzoo.registry import DATA_SAMPLERS, DATASETS, FUNCTIONS, TRANSFORMS
from visionzoo.utils.errors import ConfigError, DatasetError

TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(96, 80), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]


def _json(path):
    with open(path) as f:
        return json.load(f)


def _xyxy(bbox):
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def _load(record, with_mask=True):
    return LoadAnnotations(with_mask=with_mask)(LoadImageFromFile()(record))


def _mask_box(mask):
    """Tight xyxy box (exclusive right/bottom edge) of a binary mask."""
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


# ------------------------------------------------------------------------------------------------ records
def test_shapes_records_match_the_json(tiny_shapes):
    coco = _json(tiny_shapes['det_train_ann'])
    ds = CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=tiny_shapes['det_train_img']))
    assert ds.metainfo == dict(classes=tuple(tiny_shapes['classes']), cat_ids=[1, 2, 3, 4],
                               ann_file=tiny_shapes['det_train_ann'])
    assert len(ds) == len(coco['images']) == TINY_SHAPES['det_train']
    anns_of = {}
    for a in coco['annotations']:
        anns_of.setdefault(a['image_id'], []).append(a)
    for idx, img in enumerate(coco['images']):
        rec = ds.get_data_info(idx)
        assert rec['img_id'] == img['id'] and (rec['height'], rec['width']) == (img['height'], img['width'])
        assert rec['img_path'] == os.path.join(tiny_shapes['det_train_img'], img['file_name'])
        anns = anns_of[img['id']]
        assert [i['ann_id'] for i in rec['instances']] == [a['id'] for a in anns]
        assert [i['bbox'] for i in rec['instances']] == [_xyxy(a['bbox']) for a in anns]
        assert [i['bbox_label'] for i in rec['instances']] == [a['category_id'] - 1 for a in anns]
        assert [i['mask'] for i in rec['instances']] == [a['segmentation'] for a in anns]
        assert all(i['ignore_flag'] == 0 for i in rec['instances'])
    assert ds.get_data_info(-1) == ds.get_data_info(len(ds) - 1)


def test_shapes_det_dataset_and_registry(tiny_shapes):
    ds = DATASETS.build(dict(type='ShapesDetDataset', split='val', data_root=tiny_shapes['data_root'],
                             shapes_cfg=TINY_SHAPES, test_mode=True, pipeline=TRAIN_PIPELINE[:2]))
    assert isinstance(ds, ShapesDetDataset) and len(ds) == TINY_SHAPES['det_val']
    assert ds.metainfo['ann_file'] == tiny_shapes['det_val_ann']
    assert ds[0]['gt_bboxes'].shape[1] == 4
    with pytest.raises(DatasetError, match="split: expected 'train' or 'val'"):
        ShapesDetDataset(split='test', data_root=tiny_shapes['data_root'], shapes_cfg=TINY_SHAPES)


def test_data_root_joins_relative_paths(tiny_shapes):
    root = os.path.dirname(tiny_shapes['det_train_img'])  # <generated>/det
    ds = CocoDataset('annotations/instances_train.json', data_root=root, data_prefix=dict(img='train'))
    assert ds.metainfo['ann_file'] == tiny_shapes['det_train_ann']
    assert ds.get_data_info(0)['img_path'] == os.path.join(root, 'train', '00000.png')


def test_labelme_ids_from_zero(labelme_coco):
    coco = _json(labelme_coco['ann_file'])
    ds = CocoDataset(labelme_coco['ann_file'], data_prefix=dict(img=labelme_coco['img_dir']))
    assert len(ds) == 3 and sum(len(ds.get_data_info(i)['instances']) for i in range(3)) == 12
    meta = ds.metainfo
    assert meta['cat_ids'] == list(range(21)) and len(meta['classes']) == 21
    assert meta['classes'][0] == '_background_' and meta['classes'][15] == 'person'
    assert meta['classes'] == tuple(c['name'] for c in sorted(coco['categories'], key=lambda c: c['id']))
    by_id = {a['id']: a for a in coco['annotations']}
    assert [ds.get_data_info(i)['img_id'] for i in range(3)] == [0, 1, 2]
    for i in range(3):
        for inst in ds.get_data_info(i)['instances']:
            ann = by_id[inst['ann_id']]
            assert inst['bbox'] == _xyxy(ann['bbox'])
            assert meta['cat_ids'][inst['bbox_label']] == ann['category_id']
    assert ds.get_data_info(0)['instances'][0]['ann_id'] == 0  # id 0 is kept, not treated as missing
    # the person at x + w == width (500) keeps its box
    assert by_id[1]['bbox'][0] + by_id[1]['bbox'][2] == 500 and ds.get_data_info(0)['instances'][1]['bbox'][2] == 500


def test_masks_match_pycocotools(labelme_coco):
    from pycocotools.coco import COCO
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # pycocotools' print-free numpy 2 deprecation warnings
        gt = COCO(labelme_coco['ann_file'])
        ds = CocoDataset(labelme_coco['ann_file'], data_prefix=dict(img=labelme_coco['img_dir']))
        for i in range(len(ds)):
            res = _load(ds.get_data_info(i))
            h, w = res['img'].shape[:2]
            assert res['gt_masks'].shape == (len(res['instances']), h, w) and res['gt_masks'].dtype == np.uint8
            for inst, mask in zip(res['instances'], res['gt_masks']):
                ref = gt.annToMask(gt.anns[inst['ann_id']])
                assert mask.sum() == ref.sum() > 0
                assert np.array_equal(mask, ref)


# ------------------------------------------------------------------------------------------------ transforms
def test_resize_keep_ratio_geometry(labelme_coco):
    ds = CocoDataset(labelme_coco['ann_file'], data_prefix=dict(img=labelme_coco['img_dir']))
    res = _load(ds.get_data_info(0))  # 500 x 338
    box0, masks0 = res['gt_bboxes'].copy(), res['gt_masks'].copy()
    res = Resize(scale=(1333, 800), keep_ratio=True)(res)
    # s = min(1333 / 500, 800 / 338) = 2.36686; w = int(500 * s + 0.5) = 1183, h = int(338 * s + 0.5) = 800
    assert res['img'].shape == (800, 1183, 3) and res['img_shape'] == (800, 1183) and res['ori_shape'] == (338, 500)
    assert res['scale_factor'] == pytest.approx((1183 / 500, 800 / 338))
    expected = np.array([[191 * 2.366, 107 * 800 / 338, 314 * 2.366, 328 * 800 / 338]], np.float32)
    np.testing.assert_allclose(res['gt_bboxes'][:1], expected, rtol=1e-6)
    assert res['gt_bboxes'][1, 2] == pytest.approx(1183)  # x2 == old width stays on the new right edge
    assert res['gt_masks'].shape == (3, 800, 1183)
    # nearest resizing (OpenCV's INTER_NEAREST, as mmcv): output pixel x copies input pixel floor(x * old / new)
    ys = np.minimum((np.arange(800) * 338 / 800).astype(int), 337)
    xs = np.minimum((np.arange(1183) * 500 / 1183).astype(int), 499)
    assert np.array_equal(res['gt_masks'], masks0[:, ys][:, :, xs])
    np.testing.assert_allclose(res['gt_masks'].sum((1, 2)) / masks0.sum((1, 2)), 2.366 * 800 / 338, rtol=0.02)
    assert np.isfinite(box0).all()


def test_resize_shorter_limit_and_fixed_size(labelme_coco):
    ds = CocoDataset(labelme_coco['ann_file'], data_prefix=dict(img=labelme_coco['img_dir']))
    # 500 x 375 image, scale (300, 200): s = min(300 / 500, 200 / 375) = 0.5333 -> 267 x 200 (266.67 rounds up)
    res = Resize(scale=(300, 200))(_load(ds.get_data_info(1)))
    assert res['img'].shape[:2] == (200, 267) and res['gt_masks'].shape[1:] == (200, 267)
    assert res['scale_factor'] == pytest.approx((267 / 500, 200 / 375))
    assert (res['gt_bboxes'][:, 0::2] <= 267).all() and (res['gt_bboxes'][:, 1::2] <= 200).all()
    res = Resize(scale=(100, 50), keep_ratio=False)(_load(ds.get_data_info(1)))
    assert res['img'].shape == (50, 100, 3) and res['scale_factor'] == (0.2, 50 / 375)
    np.testing.assert_allclose(res['gt_bboxes'][0], [81 * 0.2, 20 * 50 / 375, 434 * 0.2, 375 * 50 / 375], rtol=1e-6)
    with pytest.raises(ConfigError, match='Resize.scale'):
        Resize(scale=(0, 10))


@pytest.mark.parametrize('direction', ['horizontal', 'vertical'])
def test_flip_moves_boxes_with_masks(tiny_shapes, direction):
    ds = CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=tiny_shapes['det_train_img']))
    for idx in range(len(ds)):
        res = _load(ds.get_data_info(idx))
        img0, boxes0 = res['img'].copy(), res['gt_bboxes'].copy()
        # shapes boxes are tight around the (exactly decoding) masks
        assert all(_mask_box(m) == list(b) for m, b in zip(res['gt_masks'], boxes0))
        res = Resize(scale=(128, 128))(res)  # exactly 2x: nearest doubles every pixel
        res = RandomFlip(prob=1.0, direction=direction)(res)
        assert res['flip'] is True and res['flip_direction'] == direction
        up = cv2.resize(img0, (128, 128), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(res['img'], up[:, ::-1] if direction == 'horizontal' else up[::-1])
        flipped = boxes0 * 2
        if direction == 'horizontal':
            flipped[:, [0, 2]] = 128 - flipped[:, [2, 0]]
        else:
            flipped[:, [1, 3]] = 128 - flipped[:, [3, 1]]
        np.testing.assert_array_equal(res['gt_bboxes'], flipped)
        assert all(_mask_box(m) == list(b) for m, b in zip(res['gt_masks'], res['gt_bboxes']))
    res = RandomFlip(prob=0.0)(_load(ds.get_data_info(0)))
    assert res['flip'] is False and res['flip_direction'] is None
    with pytest.raises(ConfigError, match='direction'):
        RandomFlip(direction='diagonal')


def _crowd_file(tiny_shapes, tmp_path):
    """The first two shapes training images; image 1 gets an extra crowd region (uncompressed RLE)."""
    coco = _json(tiny_shapes['det_train_ann'])
    coco['images'] = coco['images'][:2]
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in (1, 2)]
    crowd = np.zeros((64, 64), np.uint8)
    crowd[5:15, 40:60] = 1
    counts, run, value = [], 0, 0
    for v in crowd.ravel(order='F'):  # column-major run lengths, starting with zeros
        if v != value:
            counts.append(run)
            run, value = 0, v
        run += 1
    counts.append(run)
    coco['annotations'].append(dict(id=1000, image_id=1, category_id=2, bbox=[40, 5, 20, 10], area=200, iscrowd=1,
                                    segmentation=dict(size=[64, 64], counts=counts)))
    path = tmp_path / 'crowd.json'
    path.write_text(json.dumps(coco))
    return str(path), coco, crowd


def test_pack_det_inputs_and_crowd(tiny_shapes, tmp_path):
    ann_file, coco, crowd = _crowd_file(tiny_shapes, tmp_path)
    ds = CocoDataset(ann_file, data_prefix=dict(img=tiny_shapes['det_train_img']),
                     pipeline=[t for t in TRAIN_PIPELINE if t['type'] != 'RandomFlip'])
    rec = ds.get_data_info(0)
    assert rec['instances'][-1]['ignore_flag'] == 1 and rec['instances'][-1]['ann_id'] == 1000
    item = ds[0]
    n = len(rec['instances']) - 1
    inputs, s = item['inputs'], item['data_samples']
    assert inputs.dtype == torch.uint8 and inputs.shape == (3, 80, 80)
    img = cv2.cvtColor(cv2.imread(rec['img_path']), cv2.COLOR_BGR2RGB)
    assert torch.equal(inputs, torch.from_numpy(cv2.resize(img, (80, 80))).permute(2, 0, 1))  # RGB, CHW
    assert s['img_id'] == 1 and s['img_path'] == rec['img_path'] and s['ori_shape'] == (64, 64)
    assert s['img_shape'] == (80, 80) and s['scale_factor'] == (1.25, 1.25)
    assert s['flip'] is False and s['flip_direction'] is None
    assert s['gt_bboxes'].dtype == torch.float32 and s['gt_bboxes'].shape == (n, 4)
    assert s['gt_labels'].dtype == torch.int64 and s['gt_labels'].tolist() == [i['bbox_label'] for i in
                                                                              rec['instances'][:n]]
    assert s['gt_masks'].dtype == torch.uint8 and s['gt_masks'].shape == (n, 80, 80)
    assert torch.equal(s['ignored_bboxes'], torch.tensor([[40, 5, 60, 15]], dtype=torch.float32) * 1.25)
    # the crowd RLE decodes to the region it was made from
    assert np.array_equal(_load(ds.get_data_info(0))['gt_masks'][-1], crowd)
    # test pipeline without annotations: only meta, defaults for transforms that did not run
    test_ds = CocoDataset(ann_file, data_prefix=dict(img=tiny_shapes['det_train_img']), test_mode=True,
                          pipeline=[dict(type='LoadImageFromFile'), dict(type='PackDetInputs')])
    s = test_ds[1]['data_samples']
    assert s == dict(img_id=2, img_path=test_ds.get_data_info(1)['img_path'], ori_shape=(64, 64), img_shape=(64, 64),
                     scale_factor=(1.0, 1.0), flip=False, flip_direction=None)


def test_det_collate_and_registry(tiny_shapes):
    assert FUNCTIONS.get('det_collate') is det_collate
    for name, cls in [('LoadImageFromFile', LoadImageFromFile), ('LoadAnnotations', LoadAnnotations),
                      ('Resize', Resize), ('RandomFlip', RandomFlip), ('PackDetInputs', PackDetInputs)]:
        assert TRANSFORMS.get(name) is cls
    ds = CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=tiny_shapes['det_train_img']),
                     pipeline=TRAIN_PIPELINE)
    items = [ds[0], ds[1]]
    batch = det_collate(items)
    assert set(batch) == {'inputs', 'data_samples'}
    assert all(a is b['inputs'] for a, b in zip(batch['inputs'], items))
    assert all(a is b['data_samples'] for a, b in zip(batch['data_samples'], items))


def test_dataloader_yields_a_training_batch(tiny_shapes):
    from mmengine.dataset import DefaultSampler

    from visionzoo.models.data_preprocessor import DetDataPreprocessor
    ds = CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=tiny_shapes['det_train_img']),
                     pipeline=TRAIN_PIPELINE)
    batch_sampler = DATA_SAMPLERS.build(dict(type='AspectRatioBatchSampler'),
                                        default_args=dict(sampler=DefaultSampler(ds, shuffle=True, seed=0),
                                                          batch_size=2))
    loader = DataLoader(ds, batch_sampler=batch_sampler, num_workers=0, collate_fn=det_collate)
    batches = list(loader)
    assert len(batches) == len(loader) == 2
    batch = batches[0]
    assert len(batch['inputs']) == 2 and all(x.shape == (3, 80, 80) for x in batch['inputs'])
    assert all(s['gt_bboxes'].shape[0] == s['gt_labels'].shape[0] == s['gt_masks'].shape[0] > 0
               for s in batch['data_samples'])
    out = DetDataPreprocessor()(batch)
    assert out['inputs'].shape == (2, 3, 96, 96) and out['data_samples'][0]['batch_input_shape'] == (96, 96)


# ------------------------------------------------------------------------------------------------ selection
def test_filter_empty_gt_and_min_size(tiny_shapes, tmp_path):
    coco = _json(tiny_shapes['det_train_ann'])
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] != 2]
    path = tmp_path / 'empty_img.json'
    path.write_text(json.dumps(coco))
    kw = dict(data_prefix=dict(img=tiny_shapes['det_train_img']))
    ids = lambda ds: [ds.get_data_info(i)['img_id'] for i in range(len(ds))]  # noqa: E731
    assert ids(CocoDataset(str(path), **kw)) == [1, 3, 4]
    assert ids(CocoDataset(str(path), filter_cfg=dict(filter_empty_gt=False), **kw)) == [1, 2, 3, 4]
    assert ids(CocoDataset(str(path), test_mode=True, **kw)) == [1, 2, 3, 4]
    assert ids(CocoDataset(str(path), filter_cfg=dict(min_size=64), **kw)) == [1, 3, 4]
    with pytest.raises(DatasetError, match=f'{path}: no usable images.*min_size=65'):
        CocoDataset(str(path), filter_cfg=dict(min_size=65), **kw)
    assert len(CocoDataset(str(path), filter_cfg=dict(min_size=65), test_mode=True, **kw)) == 4
    with pytest.raises(ConfigError, match='filter_cfg'):
        CocoDataset(str(path), filter_cfg=dict(min_sise=1), **kw)


def test_metainfo_classes_subset(tiny_shapes):
    coco = _json(tiny_shapes['det_train_ann'])
    kw = dict(data_prefix=dict(img=tiny_shapes['det_train_img']))
    ds = CocoDataset(tiny_shapes['det_train_ann'], metainfo=dict(classes=('star', 'circle')), **kw)
    assert ds.metainfo['classes'] == ('star', 'circle') and ds.metainfo['cat_ids'] == [3, 1]
    insts = [i for k in range(len(ds)) for i in ds.get_data_info(k)['instances']]
    kept = [a for a in coco['annotations'] if a['category_id'] in (1, 3)]
    assert sorted(i['ann_id'] for i in insts) == sorted(a['id'] for a in kept)
    cat = {a['id']: a['category_id'] for a in kept}
    assert all(i['bbox_label'] == {3: 0, 1: 1}[cat[i['ann_id']]] for i in insts)
    assert len(ds) == len({a['image_id'] for a in kept})
    with pytest.raises(DatasetError) as err:
        CocoDataset(tiny_shapes['det_train_ann'], metainfo=dict(classes=('star', 'giraffe')), **kw)
    assert tiny_shapes['det_train_ann'] in str(err.value) and "'giraffe'" in str(err.value)
    assert "'circle'" in str(err.value)  # lists what the file has


# ------------------------------------------------------------------------------------------------ bad input
def _broken(tiny_shapes, tmp_path, edit, name='broken.json'):
    coco = _json(tiny_shapes['det_train_ann'])
    edit(coco)
    path = tmp_path / name
    path.write_text(json.dumps(coco))
    return str(path)


def _ann(coco, ann_id):
    return next(a for a in coco['annotations'] if a['id'] == ann_id)


def _set_ann(ann_id, **fields):
    return lambda coco: _ann(coco, ann_id).update(fields)


BAD_ANNOTATIONS = {  # name: (edit, expected id text, expected reason)
    'zero width': (_set_ann(3, bbox=[10, 10, 0, 5]), 'annotation id 3', 'non-positive width or height'),
    'negative height': (_set_ann(3, bbox=[10, 10, 5, -2]), 'annotation id 3', 'non-positive width or height'),
    'outside right': (_set_ann(4, bbox=[50, 10, 20, 5]), 'annotation id 4', 'outside its 64x64 image'),
    'outside top': (_set_ann(4, bbox=[10, -3, 5, 5]), 'annotation id 4', 'outside its 64x64 image'),
    'beyond the edge': (_set_ann(4, bbox=[64.5, 10, 0.4, 5]), 'annotation id 4', 'outside its 64x64 image'),
    'bbox not numbers': (_set_ann(5, bbox='10,10,5,5'), 'annotation id 5', r'expected \[x, y, width, height\]'),
    'bbox of three': (_set_ann(5, bbox=[1, 2, 3]), 'annotation id 5', r'expected \[x, y, width, height\]'),
    'unknown category': (_set_ann(6, category_id=99), 'annotation id 6', 'unknown category_id 99'),
    'unknown image': (_set_ann(6, image_id=77), 'annotation id 6', "not in 'images'"),
    'image_id a list': (_set_ann(6, image_id=[1]), 'annotation id 6', r'image_id=\[1\] \(expected the integer'),
    'bad iscrowd': (_set_ann(6, iscrowd=3), 'annotation id 6', 'iscrowd=3'),
    'bad segmentation': (_set_ann(6, segmentation='polygon'), 'annotation id 6', 'malformed segmentation'),
    'duplicate id': (_set_ann(6, id=5), 'annotation id 5', 'repeats the id'),
    'image size missing': (lambda c: c['images'][1].pop('width'), 'image id 2', 'width=None'),
    'image id not int': (lambda c: c['images'][1].update(id='2'), "image entry #1", "no integer 'id'"),
    'image id repeated': (lambda c: c['images'][1].update(id=1), 'image id 1', "repeats the id of entry #0"),
}


@pytest.mark.parametrize('case', list(BAD_ANNOTATIONS))
def test_bad_record_names_file_and_id(tiny_shapes, tmp_path, case):
    edit, id_text, reason = BAD_ANNOTATIONS[case]
    path = _broken(tiny_shapes, tmp_path, edit)
    kw = dict(data_prefix=dict(img=tiny_shapes['det_train_img']))
    with pytest.raises(DatasetError, match=reason) as err:
        CocoDataset(path, **kw)
    msg = str(err.value)
    assert msg.startswith(path) and id_text in msg and "on_invalid='skip'" in msg
    with pytest.warns(UserWarning) as record:
        ds = CocoDataset(path, on_invalid='skip', **kw)
    assert path in str(record[0].message) and id_text in str(record[0].message)
    # an image without an integer id (or a repeated one) cannot be matched: its annotations are reported as orphans
    orphans = sum(a['image_id'] == 2 for a in _json(tiny_shapes['det_train_ann'])['annotations'])
    assert len(record) == 1 + (orphans if case in ('image id not int', 'image id repeated') else 0)
    good = CocoDataset(tiny_shapes['det_train_ann'], **kw)
    n_good = sum(len(good.get_data_info(i)['instances']) for i in range(len(good)))
    n_left = sum(len(ds.get_data_info(i)['instances']) for i in range(len(ds)))
    if case.startswith('image '):  # the image goes, with its annotations
        assert len(ds) == len(good) - 1 and 2 not in [ds.get_data_info(i)['img_id'] for i in range(len(ds))]
        if case == 'image id repeated':  # the first image with the id stays, with all its annotations
            assert ds.get_data_info(0) == good.get_data_info(0)
    else:
        assert len(ds) == len(good) and n_left == n_good - 1


def test_box_sticking_out_by_up_to_1px_is_clipped(tiny_shapes, tmp_path):
    path = _broken(tiny_shapes, tmp_path, _set_ann(4, bbox=[-0.5, 50, 10, 14.8]))
    ds = CocoDataset(path, data_prefix=dict(img=tiny_shapes['det_train_img']))
    inst = next(i for k in range(len(ds)) for i in ds.get_data_info(k)['instances'] if i['ann_id'] == 4)
    assert inst['bbox'] == [0.0, 50.0, 9.5, 64.0]


def test_missing_image_file(tiny_shapes, tmp_path):
    img_dir = tmp_path / 'images'
    shutil.copytree(tiny_shapes['det_train_img'], img_dir)
    os.remove(img_dir / '00002.png')  # image id 3
    missing = str(img_dir / '00002.png')
    with pytest.raises(DatasetError) as err:
        CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=str(img_dir)))
    msg = str(err.value)
    assert msg.startswith(f'{missing}: image file not found') and 'image id 3' in msg
    assert tiny_shapes['det_train_ann'] in msg and "on_invalid='skip'" in msg
    with pytest.warns(UserWarning, match=f'{missing}.*image id 3'):
        ds = CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=str(img_dir)), on_invalid='skip')
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == [1, 2, 4]


@pytest.mark.parametrize('content, reason', [
    (b'', 'the annotation file is empty'),
    (b'{"images": [', 'not valid JSON'),
    (b'\xff\xfe garbage', 'not valid JSON'),
    (b'[1, 2]', 'the top level is a JSON list'),
    (b'{"images": [], "annotations": []}', r"missing key\(s\) \['categories'\]"),
    (b'{"images": {}, "annotations": [], "categories": []}', "'images' is a JSON dict"),
    (b'{"images": [], "annotations": [], "categories": [{"id": "1", "name": "a"}]}', 'category entry #0'),
    (b'{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}',
     'category id 1 appears twice'),
    (b'{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}', 'no usable images'),
])
def test_malformed_annotation_file(tmp_path, content, reason):
    path = tmp_path / 'ann.json'
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=reason) as err:
        CocoDataset(str(path), on_invalid='skip')
    assert str(err.value).startswith(str(path)) and 'expected' in str(err.value)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path}/nowhere.json: annotation file not found .*data_root=''"):
        CocoDataset(str(tmp_path / 'nowhere.json'))


def test_undecodable_image(tiny_shapes, tmp_path):
    img_dir = tmp_path / 'images'
    shutil.copytree(tiny_shapes['det_train_img'], img_dir)
    bad = img_dir / '00001.png'  # image id 2
    bad.write_bytes(bad.read_bytes()[:200])
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackDetInputs')]
    ds = CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=str(img_dir)), pipeline=pipeline)
    with pytest.raises(DatasetError) as err:
        ds[1]
    msg = str(err.value)
    assert msg.startswith(f'{bad} (image id 2): cannot decode the image') and "on_invalid='skip'" in msg
    ds = CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=str(img_dir)), pipeline=pipeline,
                     on_invalid='skip')
    with pytest.warns(UserWarning, match=f'{bad}.*image id 2'):
        assert ds[1]['data_samples']['img_id'] == 3
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # remembered: no second warning
        assert ds[1]['data_samples']['img_id'] == 3


def test_annotated_size_must_match_the_image(tiny_shapes, tmp_path):
    path = _broken(tiny_shapes, tmp_path, lambda c: c['images'][0].update(width=65))
    ds = CocoDataset(path, data_prefix=dict(img=tiny_shapes['det_train_img']), pipeline=[LoadImageFromFile()])
    with pytest.raises(DatasetError, match=r'image id 1\): the image is 64x64 but the annotation file says 65x64'):
        ds[0]


def test_mask_needs_segmentation(tiny_shapes, tmp_path):
    path = _broken(tiny_shapes, tmp_path, lambda c: _ann(c, 2).pop('segmentation'))
    ds = CocoDataset(path, data_prefix=dict(img=tiny_shapes['det_train_img']),
                     pipeline=[LoadImageFromFile(), LoadAnnotations(with_mask=True)])
    with pytest.raises(DatasetError, match='annotation id 2 has no segmentation'):
        ds[0]
    assert len(LoadAnnotations()(ds.get_data_info(0))['gt_bboxes']) == len(ds.get_data_info(0)['instances'])
    # polygons with fewer than 3 points make the instance ignored, as in mmdet
    res = LoadAnnotations(with_mask=True)(dict(height=8, width=8, instances=[
        dict(bbox=[1, 1, 3, 3], bbox_label=0, ignore_flag=0, mask=[[1, 1, 3, 3]], ann_id=0)]))
    assert res['gt_ignore_flags'].tolist() == [True] and res['gt_masks'].shape == (1, 8, 8)


def test_bad_arguments(tiny_shapes):
    kw = dict(data_prefix=dict(img=tiny_shapes['det_train_img']))
    with pytest.raises(ConfigError, match='on_invalid'):
        CocoDataset(tiny_shapes['det_train_ann'], on_invalid='ignore', **kw)
    with pytest.raises(ConfigError, match='metainfo.classes'):
        CocoDataset(tiny_shapes['det_train_ann'], metainfo=dict(classes='star'), **kw)
    with pytest.raises(DatasetError, match='pipeline'):  # as ImageFolderDataset: one builder, one error type
        CocoDataset(tiny_shapes['det_train_ann'], pipeline=[42], **kw)


# ------------------------------------------------------------------------------------------------ sampler
class _Sizes:
    """A stand-in dataset with just the image sizes."""

    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def get_data_info(self, idx):
        w, h = self.sizes[idx]
        return dict(width=w, height=h)


@pytest.mark.parametrize('batch_size', [1, 2, 3, 5])
@pytest.mark.parametrize('drop_last', [False, True])
def test_aspect_ratio_batch_sampler(batch_size, drop_last):
    from mmengine.dataset import DefaultSampler

    rng = np.random.default_rng(batch_size)
    sizes = [(int(w), int(h)) for w, h in rng.integers(10, 30, (23, 2))] + [(20, 20)]
    ds = _Sizes(sizes)
    sampler = DefaultSampler(ds, shuffle=True, seed=1)
    bs = AspectRatioBatchSampler(sampler, batch_size, drop_last=drop_last)
    batches = list(bs)
    assert len(batches) == len(bs) == (24 // batch_size if drop_last else -(-24 // batch_size))
    flat = [i for b in batches for i in b]
    order = list(sampler)
    if drop_last:
        assert len(flat) == len(set(flat)) == len(batches) * batch_size
    else:
        assert sorted(flat) == list(range(24))
    landscape = lambda i: sizes[i][0] >= sizes[i][1]  # noqa: E731
    # full batches are yielded when a bucket fills: one orientation each; only merged leftovers come last
    n_full = sum(len([i for i in order if landscape(i) == o]) // batch_size for o in (True, False))
    assert all(len({landscape(i) for i in b}) == 1 for b in batches[:n_full])
    assert all(len(b) == batch_size for b in batches[:-1])
    assert landscape(23)  # square images count as landscape


def test_aspect_ratio_sampler_arguments():
    with pytest.raises(ConfigError, match='batch_size'):
        AspectRatioBatchSampler(SequentialSampler(_Sizes([(1, 1)])), 0)
    with pytest.raises(ConfigError, match='get_data_info'):
        AspectRatioBatchSampler(SequentialSampler(range(3)), 2)


def test_records_are_independent_copies(tiny_shapes):
    ds = CocoDataset(tiny_shapes['det_train_ann'], data_prefix=dict(img=tiny_shapes['det_train_img']))
    a = ds.get_data_info(0)
    b = copy.deepcopy(a)
    a['instances'][0]['bbox'][0] = -1
    assert ds.get_data_info(0) == b
