"""Tests of the embedded shapes dataset (visionzoo.datasets.shapes) and tools/make_shapes.py."""
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from visionzoo.datasets.shapes import FORMAT_VERSION, SHAPES_CLASSES, make_shapes, shapes_root
from visionzoo.utils.errors import DatasetError

# pycocotools' decode trips a numpy 2 DeprecationWarning (copy=False) in annToMask; not ours to fix
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(cls_train_per_class=3, cls_val_per_class=2, det_train=6, det_val=3)
PATH_KEYS = ('root', 'cls_train', 'cls_val', 'det_train_img', 'det_val_img', 'det_train_ann', 'det_val_ann')


def _files(folder):
    """Relative path -> bytes of every file under ``folder``."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _stats(folder):
    """Relative path -> (inode, mtime_ns) of every file under ``folder``."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), folder)] = (st.st_ino, st.st_mtime_ns)
    return out


def _leftovers(root):
    return [n for n in os.listdir(root) if n.startswith('.')]


@pytest.fixture(scope='module')
def det_data(tmp_path_factory):
    """A detection split large enough for statistics (the classification part stays tiny)."""
    paths = make_shapes(str(tmp_path_factory.mktemp('shapes')), cls_train_per_class=1, cls_val_per_class=1,
                        det_train=40, det_val=2)
    from pycocotools.coco import COCO
    return paths, COCO(paths['det_train_ann'])


def test_shapes_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv('VISIONZOO_DATA', str(tmp_path))
    assert shapes_root() == os.path.join(str(tmp_path), 'shapes')
    monkeypatch.delenv('VISIONZOO_DATA')
    assert shapes_root() == os.path.join(os.path.expanduser('~'), '.cache', 'visionzoo', 'shapes')


def test_paths_and_manifest(tmp_path):
    paths = make_shapes(str(tmp_path), **TINY)
    assert paths['classes'] == list(SHAPES_CLASSES) and len(SHAPES_CLASSES) >= 3
    assert os.path.dirname(paths['root']) == str(tmp_path)
    assert os.path.basename(paths['root']).startswith(f'v{FORMAT_VERSION}-')
    for key in PATH_KEYS:
        assert os.path.isabs(paths[key]) and os.path.exists(paths[key]), key
    with open(os.path.join(paths['root'], 'manifest.json')) as f:
        manifest = json.load(f)
    assert manifest['format_version'] == FORMAT_VERSION
    assert manifest['params']['det_train'] == TINY['det_train'] and manifest['params']['seed'] == 0
    assert _leftovers(str(tmp_path)) == []


def test_deterministic(tmp_path):
    a = make_shapes(str(tmp_path / 'a'), workers=1, **TINY)
    b = make_shapes(str(tmp_path / 'b'), workers=3, **TINY)
    assert os.path.basename(a['root']) == os.path.basename(b['root'])
    files_a, files_b = _files(a['root']), _files(b['root'])
    assert len(files_a) == 4 * (3 + 2) + 6 + 3 + 2 + 1
    assert files_a == files_b
    c = make_shapes(str(tmp_path / 'c'), seed=1, **TINY)
    assert _files(c['root'])[os.path.join('det', 'train', '00000.png')] != files_a[os.path.join('det', 'train',
                                                                                                '00000.png')]


def test_idempotent_force_and_params(tmp_path):
    first = make_shapes(str(tmp_path), **TINY)
    before = _stats(first['root'])
    t0 = time.perf_counter()
    again = make_shapes(str(tmp_path), **TINY)
    assert time.perf_counter() - t0 < 1.0  # fast path (typically well under 1 ms)
    assert again == first
    assert _stats(first['root']) == before

    forced = make_shapes(str(tmp_path), force=True, **TINY)
    assert forced == first
    after = _stats(first['root'])
    assert after.keys() == before.keys()
    assert all(after[k] != before[k] for k in before)
    assert _leftovers(str(tmp_path)) == []

    other = make_shapes(str(tmp_path), **dict(TINY, det_train=4))
    assert other['root'] != first['root']
    assert _stats(first['root']) == after
    assert len(os.listdir(other['det_train_img'])) == 4


def test_incomplete_folder_is_regenerated(tmp_path):
    paths = make_shapes(str(tmp_path), **TINY)
    reference = _files(paths['root'])
    os.remove(os.path.join(paths['root'], 'manifest.json'))
    os.remove(os.path.join(paths['det_train_img'], '00001.png'))
    assert make_shapes(str(tmp_path), **TINY) == paths
    assert _files(paths['root']) == reference
    assert _leftovers(str(tmp_path)) == []


def test_concurrent_calls(tmp_path):
    results, errors = [], []

    def work():
        try:
            results.append(make_shapes(str(tmp_path), workers=1, **TINY))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 3 and all(r == results[0] for r in results)
    assert os.path.isfile(os.path.join(results[0]['root'], 'manifest.json'))
    assert [n for n in os.listdir(str(tmp_path)) if not n.startswith('.')] == [os.path.basename(results[0]['root'])]
    assert _leftovers(str(tmp_path)) == []


@pytest.mark.parametrize('kwargs', [dict(seed=-1), dict(det_train=1.5), dict(cls_image_size=8), dict(workers=0),
                                    dict(det_image_size=16), dict(cls_val_per_class=True)])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(DatasetError):
        make_shapes(str(tmp_path), **dict(TINY, **kwargs))


def test_classification_layout(tmp_path):
    paths = make_shapes(str(tmp_path), cls_image_size=48, **TINY)
    for key, n in (('cls_train', TINY['cls_train_per_class']), ('cls_val', TINY['cls_val_per_class'])):
        assert sorted(os.listdir(paths[key])) == sorted(SHAPES_CLASSES)
        for name in SHAPES_CLASSES:
            files = sorted(os.listdir(os.path.join(paths[key], name)))
            assert files == [f'{i:05d}.png' for i in range(n)]
            for fn in files:
                img = cv2.imread(os.path.join(paths[key], name, fn), cv2.IMREAD_UNCHANGED)
                assert img.shape == (48, 48, 3) and img.dtype == np.uint8
                assert img.std() > 5  # not blank


def test_coco_annotations(det_data):
    paths, coco = det_data
    assert sorted(coco.getImgIds()) == list(range(1, 41))
    assert [coco.cats[i]['name'] for i in sorted(coco.cats)] == list(SHAPES_CLASSES)
    assert sorted(coco.getAnnIds()) == list(range(1, len(coco.anns) + 1))
    used, sides = set(), []
    for img_id, img in coco.imgs.items():
        assert os.path.isfile(os.path.join(paths['det_train_img'], img['file_name']))
        assert (img['width'], img['height']) == (128, 128)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        assert 1 <= len(anns) <= 6
        for ann in anns:
            assert ann['category_id'] in coco.cats and ann['iscrowd'] == 0
            used.add(ann['category_id'])
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= img['width'] and y + h <= img['height']
            mask = coco.annToMask(ann)
            ys, xs = np.nonzero(mask)
            tight = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert np.abs(np.array(ann['bbox']) - tight).max() <= 1
            assert ann['area'] >= 20 and ann['area'] == mask.sum()  # polygons are exact; RLE when they cannot be
            sides.append(max(w, h))
    assert len(used) >= 3
    assert min(sides) < 16 and max(sides) > 48


def test_coco_overlaps(det_data):
    _, coco = det_data

    def overlap(a, b):
        return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]

    n = 0
    for img_id in coco.imgs:
        boxes = [a['bbox'] for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))]
        n += any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert n >= 1


def test_detection_images_match_json(det_data):
    paths, coco = det_data
    img = cv2.imread(os.path.join(paths['det_train_img'], coco.imgs[1]['file_name']), cv2.IMREAD_UNCHANGED)
    assert img.shape == (128, 128, 3)


def test_cli(tmp_path):
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    cmd = [sys.executable, os.path.join(REPO, 'tools', 'make_shapes.py'), '--root', str(tmp_path),
           '--cls-train-per-class', '2', '--cls-val-per-class', '1', '--det-train', '2', '--det-val', '1']
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    printed = dict(line.split(': ', 1) for line in out.stdout.strip().splitlines())
    assert printed['classes'] == ','.join(SHAPES_CLASSES)
    for key in PATH_KEYS:
        assert os.path.exists(printed[key]), key
    assert printed == {k: (','.join(v) if k == 'classes' else v)
                       for k, v in make_shapes(str(tmp_path), cls_train_per_class=2, cls_val_per_class=1,
                                               det_train=2, det_val=1).items()}


def test_cli_bad_argument(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('make_shapes_cli', os.path.join(REPO, 'tools', 'make_shapes.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(['--root', str(tmp_path), '--seed', '-3']) == 2
    assert 'seed' in capsys.readouterr().err
    assert not os.listdir(str(tmp_path))
