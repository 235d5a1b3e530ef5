"""Decode an image file to 8-bit RGB: the one decoder of the classification and detection loaders.

For images only. High-bit-depth pixels are rescaled to 8 bit here, which would corrupt a label map (class ids must
be read exactly as stored); a segmentation label loader must not use this module.

How each kind of file comes out (Pillow does the decoding):

* 8-bit files (``L``, ``RGB``, ``P``, ``LA``, ``RGBA``, ``1``, ``CMYK``, ...): ``Image.convert('RGB')``, unchanged
  bit for bit from what the loaders always did (alpha dropped, palette looked up, grey replicated).
* 16-bit greyscale (PNG, TIFF, PGM: Pillow modes ``I;16``, ``I;16L``, ``I;16B``, ``I;16N``, or ``I`` with a
  16-bit raw mode): ``v >> 8``, the high byte. That is the reduction Pillow itself applies to 16-bit RGB and RGBA
  PNG/TIFF files (it opens them as 8-bit ``RGB``/``RGBA``), and OpenCV's ``imread`` to 16-bit PNGs, so a picture
  gives the same 8-bit values whether it was saved as 16-bit grey or 16-bit colour. ``convert('RGB')`` clipped
  these files at 255 instead (nearly all white).
* 32-bit float (``F``): values in [0, 1] become ``floor(v * 255 + 0.5)``; anything else (negative, above 1, NaN)
  is refused, as is 32-bit integer data (``I`` without a 16-bit raw mode), whose range has no convention.
"""
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

__all__ = ['read_rgb8']

def _raw_mode(im: Image.Image) -> Optional[str]:
    """The raw mode of the first tile of a not yet decoded image (how the file stores its pixels), if known."""
    for tile in getattr(im, 'tile', None) or ():
        args = tile[3]  # (codec, extents, offset, args); args is the raw mode or a tuple starting with it
        if isinstance(args, str):
            return args
        if isinstance(args, tuple) and args and isinstance(args[0], str):
            return args[0]
    return None


def _is_16bit(im: Image.Image, raw_mode: Optional[str]) -> bool:
    return im.mode.startswith('I;16') or (im.mode == 'I' and raw_mode is not None and raw_mode.startswith('I;16'))


def _gray_to_rgb(gray8: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(np.repeat(gray8[:, :, None], 3, axis=2)))


def _to_rgb8(im: Image.Image, is_16bit: bool) -> Image.Image:
    if is_16bit:
        v = np.asarray(im).astype(np.int64)
        if v.size and (v.min() < 0 or v.max() > 65535):
            raise ValueError(f'16-bit image (mode {im.mode!r}) with values in [{v.min()}, {v.max()}]; expected '
                             f'values in [0, 65535]')
        return _gray_to_rgb((v >> 8).astype(np.uint8))
    if im.mode == 'F':
        v = np.asarray(im, dtype=np.float64)
        if v.size and not (np.isfinite(v).all() and v.min() >= 0.0 and v.max() <= 1.0):
            raise ValueError(f'float image (mode F) with values in [{np.nanmin(v)}, {np.nanmax(v)}]; expected finite '
                             f'values in [0, 1]')
        return _gray_to_rgb(np.floor(v * 255.0 + 0.5).astype(np.uint8))
    if im.mode.startswith('I'):
        raise ValueError(f'32-bit integer image (mode {im.mode!r}); expected 8- or 16-bit channels, or float '
                         f'values in [0, 1]')
    return im.convert('RGB')


def read_rgb8(path: str, exif_transpose: bool = False) -> Image.Image:
    """Decode the image file ``path`` to an 8-bit ``RGB`` PIL image (see the module notes for high bit depths).

    Images only, never label maps. With ``exif_transpose``, the EXIF orientation is applied first (as OpenCV's
    ``imread`` does). Decoding errors propagate as Pillow raises them (``OSError``, ``UnidentifiedImageError``,
    ...); pixel data this module cannot map to 8 bit raises ``ValueError`` saying what it found and what is
    expected. The caller names the file.
    """
    with Image.open(path) as im:
        is_16bit = _is_16bit(im, _raw_mode(im))  # read before decoding: the tiles are gone afterwards
        if exif_transpose:
            im = ImageOps.exif_transpose(im)
        return _to_rgb8(im, is_16bit)
