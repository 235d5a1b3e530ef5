"""Embedded, download-free "shapes" toy dataset for demos and tests.

``make_shapes()`` renders a classification split (ImageFolder layout) and a detection split (COCO instances JSON)
of filled geometric shapes on textured, noisy backgrounds. Classes differ by shape only: colours, sizes, positions
and rotations are random. The data is generated on first use into ``<root>/v<format>-<hash8>/`` (one folder per
parameter set) and reused afterwards.

Generation is deterministic: every image draws from its own ``numpy.random.default_rng`` stream seeded from
``(seed, split, label, index)``, shapes are rasterised by OpenCV with fixed-point integer coordinates and colours are
integers, so the same parameters give byte-identical PNG and JSON files (for the same numpy, OpenCV and zlib).

Layout of one generated folder::

    manifest.json                          parameters + format version, written last
    cls/{train,val}/<class_name>/<nnnnn>.png
    det/{train,val}/<nnnnn>.png
    det/annotations/instances_{train,val}.json
"""
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..utils.errors import DatasetError

__all__ = ['SHAPES_CLASSES', 'FORMAT_VERSION', 'make_shapes', 'shapes_root']

# Alphabetical, so that a sorted ImageFolder scan gives the same label order as these names and the COCO ids.
SHAPES_CLASSES = ('circle', 'square', 'star', 'triangle')
FORMAT_VERSION = 1

_MANIFEST = 'manifest.json'
_CLS_TRAIN, _CLS_VAL, _DET_TRAIN, _DET_VAL = 1, 2, 3, 4  # seed-stream codes of the four splits
_STAR_INNER = 0.42  # inner / outer radius of the five-pointed star
_DET_MIN_DIAMETER = 10.0  # smallest circumscribed diameter of a detection object (px)
_DET_MAX_FRACTION = 0.75  # largest circumscribed diameter, as a fraction of the detection image side
_MIN_AREA = 20  # px; smallest full and visible object area
_MIN_VISIBLE = 0.4  # smallest visible fraction of an object after occlusion
_PLACE_TRIES = 20
# Appearance ranges; they set the difficulty. They are part of the cache key (a change gives a new folder); any
# other change to the rendering must bump FORMAT_VERSION. Tuned so that a small CNN trained from scratch on the
# default classification split (1200 images) reaches ~94% val accuracy after ~600 steps of batch 64, but is still
# near chance after ~100 steps: harder settings (contrast 45-150, stronger texture) stayed at chance for 230 steps.
_STYLE = {
    'texture': (0.05, 0.2),  # amplitude of the smooth colour texture, times 127.5
    'blob_alpha': (0.1, 0.3),  # opacity of background blobs
    'line_alpha': (0.2, 0.5),  # opacity of background lines
    'contrast': (60.0, 250.0),  # RGB distance of an object's colour to the mean background under it
    'contrast_power': 0.5,  # contrast = lo + (hi - lo) * u ** power, u ~ U(0, 1): power < 1 favours high contrast
    'shade': 20.0,  # largest linear shading across an object
    'noise': (2.0, 6.0),  # sigma of the gaussian pixel noise
}


def shapes_root() -> str:
    """Default cache folder: ``$VISIONZOO_DATA/shapes`` if set, else ``~/.cache/visionzoo/shapes``."""
    base = os.environ.get('VISIONZOO_DATA')
    if base:
        return os.path.abspath(os.path.join(os.path.expanduser(base), 'shapes'))
    return os.path.abspath(os.path.join(os.path.expanduser('~'), '.cache', 'visionzoo', 'shapes'))


# ----------------------------------------------------------------------------------------------------------------
# rendering


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (float32, read-only), ``xx[y, x] = x`` and ``yy[y, x] = y``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx.flags.writeable = False
    yy.flags.writeable = False
    return xx, yy


def _fixed(v: float) -> int:
    """Float pixel coordinate to OpenCV fixed point with ``shift=4``."""
    return int(round(v * 16.0))


def _shape_mask(label: int, cx: float, cy: float, diameter: float, angle: float, h: int, w: int) -> np.ndarray:
    """Boolean ``(h, w)`` mask of a filled shape inscribed in the circle of ``diameter`` centred at ``(cx, cy)``."""
    mask = np.zeros((h, w), np.uint8)
    radius = diameter / 2.0
    name = SHAPES_CLASSES[label]
    if name == 'circle':
        cv2.circle(mask, (_fixed(cx), _fixed(cy)), _fixed(radius), 1, thickness=-1, lineType=cv2.LINE_8, shift=4)
        return mask.astype(bool)
    if name == 'triangle':
        radii = [radius] * 3
    elif name == 'square':
        radii = [radius] * 4
    elif name == 'star':
        radii = [radius, radius * _STAR_INNER] * 5
    else:  # pragma: no cover - SHAPES_CLASSES and this function go together
        raise AssertionError(name)
    steps = [angle + 2.0 * math.pi * k / len(radii) for k in range(len(radii))]
    pts = [[_fixed(cx + r * math.cos(a)), _fixed(cy + r * math.sin(a))] for r, a in zip(radii, steps)]
    cv2.fillPoly(mask, [np.array(pts, np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _norm3(v) -> float:
    return math.sqrt(float(v[0]) ** 2 + float(v[1]) ** 2 + float(v[2]) ** 2)


def _blend(img: np.ndarray, mask: np.ndarray, color, alpha: float) -> None:
    img[mask] = img[mask] * np.float32(1.0 - alpha) + np.asarray(color, np.float32) * np.float32(alpha)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Float32 ``(h, w, 3)`` RGB background: colour gradient + smooth texture + faint lines and blobs."""
    xx, yy = _grid(h, w)
    c0 = rng.integers(0, 256, 3).astype(np.float32)
    c1 = rng.integers(0, 256, 3).astype(np.float32)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    proj = xx * np.float32(math.cos(theta)) + yy * np.float32(math.sin(theta))
    t = (proj - proj.min()) / (proj.max() - proj.min() + np.float32(1e-6))
    img = c0 + (c1 - c0) * t[..., None]
    # smooth texture: a coarse random grid, upsampled bilinearly with OpenCV's bit-exact 8-bit resize
    g = int(rng.integers(3, 8))
    coarse = rng.integers(0, 256, (g, g, 3)).astype(np.uint8)
    texture = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR_EXACT).astype(np.float32)
    img += (texture - np.float32(127.5)) * np.float32(rng.uniform(*_STYLE['texture']))
    side = min(h, w)
    # clutter: faint elongated blobs (aspect >= 2, so they never look like circles) and thin lines
    for _ in range(int(rng.integers(0, 4))):
        m = np.zeros((h, w), np.uint8)
        a = int(rng.integers(max(3, side // 10), max(4, side * 2 // 5)))
        b = max(1, int(a * rng.uniform(0.15, 0.5)))
        cv2.ellipse(m, (int(rng.integers(0, w)), int(rng.integers(0, h))), (a, b), int(rng.integers(0, 180)), 0, 360,
                    1, thickness=-1, lineType=cv2.LINE_8)
        _blend(img, m.astype(bool), rng.integers(0, 256, 3), rng.uniform(*_STYLE['blob_alpha']))
    for _ in range(int(rng.integers(0, 4))):
        m = np.zeros((h, w), np.uint8)
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(m, p0, p1, 1, thickness=int(rng.integers(1, max(2, side // 48) + 1)), lineType=cv2.LINE_8)
        _blend(img, m.astype(bool), rng.integers(0, 256, 3), rng.uniform(*_STYLE['line_alpha']))
    return img


def _pick_color(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Random integer RGB colour at a random distance (``_STYLE['contrast']``) from the mean background in ``mask``."""
    bg = np.rint(img[mask].mean(axis=0)) if mask.any() else np.full(3, 127.0)
    for _ in range(10):
        v = rng.normal(size=3)
        n = _norm3(v)
        if n < 1e-6:
            continue
        lo, hi = _STYLE['contrast']
        contrast = lo + (hi - lo) * rng.random() ** _STYLE['contrast_power']
        color = np.rint(np.clip(bg + v * (contrast / n), 0.0, 255.0))
        if _norm3(color - bg) >= _STYLE['contrast'][0]:
            return color
    return np.where(bg < 128.0, 255.0, 0.0)  # most distant corner of the colour cube


def _paint(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, cx: float, cy: float, diameter: float) -> None:
    """Fill ``mask`` with a random colour plus a mild linear shading."""
    color = _pick_color(rng, img, mask)
    sx, sy = rng.uniform(-_STYLE['shade'], _STYLE['shade'], 2)
    xx, yy = _grid(*mask.shape)
    gx, gy = np.float32(sx / diameter), np.float32(sy / diameter)
    shade = (xx[mask] - np.float32(cx)) * gx + (yy[mask] - np.float32(cy)) * gy
    img[mask] = color.astype(np.float32) + shade[:, None]


def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Add gaussian noise, round and clip to uint8 RGB."""
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(*_STYLE['noise']))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _cls_image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """One main shape of ``label`` (45-85% of the side, maybe clipped) and 0-2 small distractors of any class."""
    img = _background(rng, size, size)
    d_main = rng.uniform(0.45, 0.85) * size
    r = d_main / 2.0
    main = (label, rng.uniform(0.7 * r, size - 0.7 * r), rng.uniform(0.7 * r, size - 0.7 * r), d_main,
            rng.uniform(0.0, 2.0 * math.pi))
    below, above = [], []
    d_hi = d_main / 3.0
    d_lo = min(6.0, d_hi)
    for _ in range(int(rng.integers(0, 3))):
        d = rng.uniform(d_lo, d_hi)
        obj = (int(rng.integers(len(SHAPES_CLASSES))), rng.uniform(d / 2, size - d / 2),
               rng.uniform(d / 2, size - d / 2), d, rng.uniform(0.0, 2.0 * math.pi))
        (below if rng.random() < 0.5 else above).append(obj)
    for lab, cx, cy, d, ang in below + [main] + above:
        _paint(rng, img, _shape_mask(lab, cx, cy, d, ang, size, size), cx, cy, d)
    return _finish(rng, img)


def _det_image(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray, int]]]:
    """2-6 shapes, log-uniform sizes, occlusions limited so every object stays >= 40% visible.

    Returns:
        The uint8 RGB image and ``[(label, visible_mask, full_area), ...]`` in drawing order.
    """
    img = _background(rng, size, size)
    log_lo, log_hi = math.log(_DET_MIN_DIAMETER), math.log(max(_DET_MIN_DIAMETER, _DET_MAX_FRACTION * size))
    objects = []  # [label, visible mask, full area]
    for _ in range(int(rng.integers(2, 7))):
        label = int(rng.integers(len(SHAPES_CLASSES)))
        for _ in range(_PLACE_TRIES):
            d = math.exp(rng.uniform(log_lo, log_hi))
            cx, cy = rng.uniform(d / 2, size - d / 2, 2)
            angle = rng.uniform(0.0, 2.0 * math.pi)
            mask = _shape_mask(label, cx, cy, d, angle, size, size)
            area = int(np.count_nonzero(mask))
            if area < _MIN_AREA:
                continue
            remaining = [int(np.count_nonzero(vis & ~mask)) for _, vis, _ in objects]
            if all(rem >= max(_MIN_AREA, _MIN_VISIBLE * full) for rem, (_, _, full) in zip(remaining, objects)):
                break
        else:
            continue  # no acceptable placement: leave this object out
        for obj in objects:
            obj[1] = obj[1] & ~mask
        objects.append([label, mask, area])
        _paint(rng, img, mask, cx, cy, d)
    return _finish(rng, img), [tuple(o) for o in objects]


# ----------------------------------------------------------------------------------------------------------------
# annotations


def _segmentation(mask: np.ndarray):
    """COCO polygons of a boolean mask when they decode back to exactly the mask, else compressed RLE.

    Contours are traced on the 2x nearest-upsampled mask and mapped back, which puts the polygon a quarter pixel
    inside the pixel edges; pycocotools rasterises such polygons to exactly the original pixels (holes excepted).
    """
    from pycocotools import mask as mask_utils

    h, w = mask.shape
    m8 = mask.astype(np.uint8)
    up = cv2.resize(m8, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [((c.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0).ravel().tolist() for c in contours if len(c) >= 3]
    rle = mask_utils.encode(np.asfortranarray(m8))
    # compressed RLE is canonical, so equal counts <=> equal masks
    if polys and mask_utils.merge(mask_utils.frPyObjects(polys, h, w))['counts'] == rle['counts']:
        return polys
    return {'size': [int(h), int(w)], 'counts': rle['counts'].decode('ascii')}


def _coco_skeleton(split: str) -> dict:
    return {
        'info': {'description': f'visionzoo synthetic shapes, {split} split', 'version': str(FORMAT_VERSION)},
        'licenses': [],
        'images': [],
        'annotations': [],
        'categories': [{'id': i + 1, 'name': n, 'supercategory': 'shape'} for i, n in enumerate(SHAPES_CLASSES)],
    }


def _annotations(objects, image_id: int) -> List[dict]:
    """COCO annotations (without ``id``) of ``_det_image`` objects."""
    anns = []
    for label, vis, full in objects:
        area = int(np.count_nonzero(vis))
        if area < _MIN_AREA or area < _MIN_VISIBLE * full:
            continue  # safety net; placement already keeps objects visible
        ys, xs = np.nonzero(vis)
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
        anns.append({
            'image_id': image_id,
            'category_id': label + 1,
            'bbox': [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
            'area': float(area),
            'segmentation': _segmentation(vis),
            'iscrowd': 0,
        })
    return anns


# ----------------------------------------------------------------------------------------------------------------
# generation


def _write_png(path: str, rgb: np.ndarray) -> None:
    # Huffman-only deflate: the noisy images barely compress by matching, and this is ~2x faster and smaller
    params = [cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1]), params):
        raise DatasetError(f'{path}: could not write image')


def _layout(folder: str) -> Dict[str, str]:
    return {
        'root': folder,
        'cls_train': os.path.join(folder, 'cls', 'train'),
        'cls_val': os.path.join(folder, 'cls', 'val'),
        'det_train_img': os.path.join(folder, 'det', 'train'),
        'det_val_img': os.path.join(folder, 'det', 'val'),
        'det_train_ann': os.path.join(folder, 'det', 'annotations', 'instances_train.json'),
        'det_val_ann': os.path.join(folder, 'det', 'annotations', 'instances_val.json'),
    }


def _cls_job(args) -> None:
    path, seed, code, label, index, size = args
    _write_png(path, _cls_image(np.random.default_rng([seed, code, label, index]), label, size))


def _det_job(args) -> List[dict]:
    path, seed, code, index, size = args
    img, objects = _det_image(np.random.default_rng([seed, code, 0, index]), size)
    _write_png(path, img)
    return _annotations(objects, index + 1)


def _generate(folder: str, params: dict, workers: int) -> dict:
    """Write the whole dataset into ``folder`` (which exists and is empty); returns image/annotation counts.

    Images are rendered by a thread pool (OpenCV and numpy release the GIL for part of the work); every image has
    its own random stream and annotations are numbered in image order, so the output does not depend on ``workers``.
    """
    paths = _layout(folder)
    seed = params['seed']
    counts = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for key, code, per_class in (('cls_train', _CLS_TRAIN, params['cls_train_per_class']),
                                     ('cls_val', _CLS_VAL, params['cls_val_per_class'])):
            jobs = []
            for label, name in enumerate(SHAPES_CLASSES):
                os.makedirs(os.path.join(paths[key], name))
                jobs += [(os.path.join(paths[key], name, f'{i:05d}.png'), seed, code, label, i,
                          params['cls_image_size']) for i in range(per_class)]
            list(pool.map(_cls_job, jobs))
            counts[key] = len(jobs)
        os.makedirs(os.path.dirname(paths['det_train_ann']))
        size = params['det_image_size']
        for split, code, n in (('train', _DET_TRAIN, params['det_train']), ('val', _DET_VAL, params['det_val'])):
            img_dir = paths[f'det_{split}_img']
            os.makedirs(img_dir)
            coco = _coco_skeleton(split)
            jobs = [(os.path.join(img_dir, f'{i:05d}.png'), seed, code, i, size) for i in range(n)]
            for i, anns in enumerate(pool.map(_det_job, jobs)):
                coco['images'].append({'id': i + 1, 'file_name': f'{i:05d}.png', 'width': size, 'height': size})
                for ann in anns:
                    coco['annotations'].append({'id': len(coco['annotations']) + 1, **ann})
            with open(paths[f'det_{split}_ann'], 'w') as f:
                f.write(json.dumps(coco, separators=(',', ':')))  # dumps uses the fast C encoder
            counts[f'det_{split}_images'] = n
            counts[f'det_{split}_annotations'] = len(coco['annotations'])
    return counts


def _manifest_ok(folder: str, params: dict) -> bool:
    try:
        with open(os.path.join(folder, _MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    return (isinstance(manifest, dict) and manifest.get('format_version') == FORMAT_VERSION
            and manifest.get('params') == params and manifest.get('classes') == list(SHAPES_CLASSES)
            and manifest.get('style') == json.loads(json.dumps(_STYLE)))


def _move_aside(folder: str, root: str) -> Optional[str]:
    """Rename ``folder`` into a fresh hidden trash folder under ``root``; returns the trash folder (or None)."""
    trash = tempfile.mkdtemp(prefix='.old-', dir=root)
    try:
        os.rename(folder, os.path.join(trash, 'data'))
    except FileNotFoundError:  # someone else moved it first
        pass
    return trash


def _result(folder: str) -> dict:
    out = _layout(folder)
    out['classes'] = list(SHAPES_CLASSES)
    return out


def make_shapes(root: Optional[str] = None, *, seed: int = 0, cls_image_size: int = 64, cls_train_per_class: int = 300,
                cls_val_per_class: int = 60, det_image_size: int = 128, det_train: int = 1500, det_val: int = 200,
                force: bool = False, workers: Optional[int] = None) -> dict:
    """Generate the shapes dataset once (or reuse it) and return its paths.

    Args:
        root: cache folder; ``shapes_root()`` by default. The data goes to ``<root>/v<format>-<hash8>/``.
        seed: non-negative base seed.
        cls_image_size: side of the classification images (px, >= 16).
        cls_train_per_class: classification training images per class.
        cls_val_per_class: classification validation images per class.
        det_image_size: side of the detection images (px, >= 32).
        det_train: detection training images.
        det_val: detection validation images.
        force: regenerate even if a complete copy exists (written aside, then swapped in).
        workers: rendering threads; by default the usable CPU cores, at most 8. The output does not depend on it.

    Returns:
        Absolute paths ``root`` (the generated folder), ``cls_train``, ``cls_val`` (ImageFolder dirs),
        ``det_train_img``, ``det_val_img`` (image dirs), ``det_train_ann``, ``det_val_ann`` (COCO JSON files), and
        ``classes`` (list of class names; COCO category id = index + 1).
    """
    params = {'seed': seed, 'cls_image_size': cls_image_size, 'cls_train_per_class': cls_train_per_class,
              'cls_val_per_class': cls_val_per_class, 'det_image_size': det_image_size, 'det_train': det_train,
              'det_val': det_val}
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DatasetError(f'make_shapes: {key} must be an integer, got {value!r}')
        if value < 0:
            raise DatasetError(f'make_shapes: {key} must be >= 0, got {value}')
    params = {k: int(v) for k, v in params.items()}
    if cls_image_size < 16:
        raise DatasetError(f'make_shapes: cls_image_size must be >= 16, got {cls_image_size}')
    if det_image_size < 32:
        raise DatasetError(f'make_shapes: det_image_size must be >= 32, got {det_image_size}')

    root = os.path.abspath(os.path.expanduser(root if root is not None else shapes_root()))
    key = json.dumps({'format_version': FORMAT_VERSION, 'classes': list(SHAPES_CLASSES), 'params': params,
                      'style': _STYLE}, sort_keys=True)
    folder = os.path.join(root, f'v{FORMAT_VERSION}-{hashlib.sha1(key.encode()).hexdigest()[:8]}')
    if not force and _manifest_ok(folder, params):
        return _result(folder)

    if workers is None:
        workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1)
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DatasetError(f'make_shapes: workers must be a positive integer, got {workers!r}')
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.tmp-{os.path.basename(folder)}-', dir=root)
    trash = None
    try:
        counts = _generate(tmp, params, workers)
        manifest = {'format_version': FORMAT_VERSION, 'name': 'visionzoo-shapes', 'classes': list(SHAPES_CLASSES),
                    'params': params, 'style': _STYLE, 'counts': counts}
        with open(os.path.join(tmp, _MANIFEST), 'w') as f:
            json.dump(manifest, f, indent=2)
        if os.path.lexists(folder) and (force or not _manifest_ok(folder, params)):
            trash = _move_aside(folder, root)  # stale, broken or to be replaced
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _manifest_ok(folder, params):  # not a concurrent complete copy: a real error
                raise
            # another process installed the same data meanwhile: use theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    return _result(folder)
