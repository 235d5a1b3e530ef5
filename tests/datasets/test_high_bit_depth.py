"""16-bit and float images reach the pipeline as correctly scaled 8-bit RGB through both image loaders.

The expected 8-bit value of a 16-bit sample ``v`` is ``v >> 8`` (its high byte): Pillow reduces 16-bit RGB PNG/TIFF
files that way itself, and OpenCV's ``imread`` (mmcv's loader) 16-bit PNGs, so grey and colour files must agree
with it. The 16-bit files are written with OpenCV (an encoder independent of the Pillow decoder under test) and the
ramp passes through values where ``v >> 8`` and ``round(v / 257)`` differ, so a reduction by another rule fails.
"""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from visionzoo.datasets import ImageFolderDataset, LoadImageFromFile
from visionzoo.utils.errors import DatasetError

H, W = 6, 40
RAMP16 = (np.arange(H * W, dtype=np.int64) * 273 + 5).astype(np.uint16).reshape(H, W)  # 5 .. 65252, uneven steps
RGB16 = np.stack([RAMP16, RAMP16[::-1], 65535 - RAMP16], axis=-1)


def _load_both(path):
    """The same file through LoadImageFromFile (detection) and the ImageFolder loader (classification)."""
    det = LoadImageFromFile()(dict(img_path=str(path), img_id=1))['img']
    folder = os.path.dirname(os.path.dirname(path))
    ds = ImageFolderDataset(folder, pipeline=np.asarray)
    (idx,) = [i for i, (p, _) in enumerate(ds.samples) if p == str(path)]
    cls = ds[idx]['inputs']
    return det, cls


def _write(tmp_path, name, writer):
    path = tmp_path / 'data' / 'cls' / name
    path.parent.mkdir(parents=True, exist_ok=True)
    writer(str(path))
    return path


def test_ramp_distinguishes_the_two_roundings():
    assert ((RAMP16 >> 8) != np.round(RAMP16 / 257)).any()
    assert ((RAMP16 >> 8) == 0).any() and ((RAMP16 >> 8) == 254).any()


@pytest.mark.parametrize('ext', ['png', 'tif'])
def test_16bit_gray(tmp_path, ext):
    path = _write(tmp_path, f'gray16.{ext}', lambda p: cv2.imwrite(p, RAMP16))
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # really a 16-bit file
    expected = np.repeat((RAMP16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    for img in _load_both(path):
        assert img.dtype == np.uint8 and img.shape == (H, W, 3)
        np.testing.assert_array_equal(img, expected)
        assert abs(img.mean() - (RAMP16 / 257).mean()) < 1.0  # about 127, not the clipped 254


@pytest.mark.parametrize('ext', ['png', 'tif'])
@pytest.mark.parametrize('alpha', [False, True])
def test_16bit_rgb_and_rgba(tmp_path, ext, alpha):
    data = np.concatenate([RGB16, RAMP16[:, :, None]], axis=-1) if alpha else RGB16
    bgr = data[..., [2, 1, 0, 3]] if alpha else data[..., ::-1]
    path = _write(tmp_path, f'rgb16.{ext}', lambda p: cv2.imwrite(p, np.ascontiguousarray(bgr)))
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    for img in _load_both(path):
        np.testing.assert_array_equal(img, (RGB16 >> 8).astype(np.uint8))  # alpha dropped, as convert('RGB')


def test_16bit_pgm_opened_as_mode_i(tmp_path):
    path = _write(tmp_path, 'gray16.pgm', lambda p: cv2.imwrite(p, RAMP16))
    with Image.open(path) as im:
        assert im.mode == 'I'  # Pillow's 32-bit mode, holding 16-bit samples
    for img in _load_both(path):
        np.testing.assert_array_equal(img[..., 1], (RAMP16 >> 8).astype(np.uint8))


def test_16bit_exif_orientation_still_applied_for_detection(tmp_path):
    path = tmp_path / 'data' / 'cls' / 'rot.png'
    path.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: rotate 90 degrees clockwise to display
    Image.fromarray(RAMP16).save(path, exif=exif)
    det, cls = _load_both(path)
    np.testing.assert_array_equal(det[..., 0], np.rot90(RAMP16 >> 8, k=-1))
    np.testing.assert_array_equal(cls[..., 0], RAMP16 >> 8)  # the classification loader never applied EXIF


def test_float_image_in_unit_range(tmp_path):
    values = (np.arange(H * W, dtype=np.float32).reshape(H, W) + 0.25) / (H * W)  # no ties at x.5
    path = _write(tmp_path, 'float.tif', lambda p: Image.fromarray(values).save(p))
    expected = np.array([[round(float(v) * 255) for v in row] for row in values], dtype=np.uint8)
    for img in _load_both(path):
        np.testing.assert_array_equal(img[..., 2], expected)


@pytest.mark.parametrize('name,array', [
    ('float_out_of_range.tif', np.full((H, W), 2.5, np.float32)),
    ('int32.tif', np.full((H, W), 70000, np.int32)),
])
def test_unmappable_depth_is_one_clear_error(tmp_path, name, array):
    path = _write(tmp_path, name, lambda p: Image.fromarray(array).save(p))
    with pytest.raises(DatasetError, match=f'{name} \\(image id 1\\): cannot decode the image .*expected'):
        LoadImageFromFile()(dict(img_path=str(path), img_id=1))
    ds = ImageFolderDataset(str(tmp_path / 'data'))
    with pytest.raises(DatasetError, match=f'{name}: cannot read image .*expected'):
        ds[0]


@pytest.mark.parametrize('mode', ['L', 'RGB', 'P', 'LA', 'RGBA', '1'])
def test_8bit_images_unchanged_bit_for_bit(tmp_path, mode):
    rng = np.random.default_rng(0)
    src = Image.fromarray(rng.integers(0, 256, (H, W, 4), dtype=np.uint8), 'RGBA')
    im = src.convert('RGB').quantize(16) if mode == 'P' else src.convert(mode)
    path = _write(tmp_path, f'img_{mode}.png', im.save)
    with Image.open(path) as reread:
        assert reread.mode == mode
        expected = np.asarray(reread.convert('RGB'))  # what the loaders did before high-bit-depth support
    for img in _load_both(path):
        assert img.dtype == np.uint8
        np.testing.assert_array_equal(img, expected)
