"""Safe image decoding: header-checked pixel limits, cheap JPEG downscale, RGB uint8 from every mode."""

from __future__ import annotations

import io
import logging
import struct

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from vlclip_core.config import ImageConfig
from vlclip_core.errors import ItemError

log = logging.getLogger(__name__)

Image.init()
# Only raster formats with pure-Python or bundled decoders; never EPS (Ghostscript) or other exotic plugins.
_WANTED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "PPM", "ICO")
FORMATS = tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)
_WHITE = (255, 255, 255, 255)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def decode_image(data: bytes, cfg: ImageConfig) -> np.ndarray:
    """Decode image bytes into a C-contiguous uint8 RGB array (h, w, 3) with max(h, w) <= cfg.max_side.

    Rules:
    - zero bytes -> ItemError("empty_file"); bytes no allowed format recognises (`FORMATS`) ->
      "not_an_image"; a header whose width*height exceeds cfg.max_pixels -> "too_many_pixels", checked
      from the header before any pixel is decoded (Pillow's own DecompressionBombError maps to it too);
      data that ends early -> "truncated_image" (truncated images are never loaded partially);
      other undecodable data -> "corrupt_image"; a mode with no RGB conversion -> "unsupported_mode".
    - JPEGs are decoded in draft mode at the smallest DCT scale (1/2, 1/4, 1/8) that still covers
      cfg.max_side, then resized; other formats are resized after decoding (bicubic).
    - Animated GIF/WebP/APNG and multi-page TIFF: the first frame only.
    - EXIF orientation is applied (a broken EXIF block is logged and ignored).
    - Modes: RGB as is; L, 1 (bilevel), P without transparency, CMYK, YCbCr, ... -> Pillow's RGB
      conversion; anything with alpha (RGBA, LA, PA, P or L/RGB with a transparency key) is composited
      on white; 16-bit grey (I;16*) and 32-bit integer grey (I) are clipped to 0..65535 and divided by
      257; float grey (F) is stretched from its min..max to 0..255.
    """
    if not data:
        raise ItemError("empty_file", "zero bytes")
    img = _open(data, cfg)
    if img.format in ("JPEG", "MPO"):
        img.draft("RGB", _target_size(img.size, cfg.max_side))
    _load(img)
    img = _to_rgb(_apply_orientation(img))
    img = _downscale(img, cfg.max_side)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _open(data: bytes, cfg: ImageConfig) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as err:
        raise ItemError("too_many_pixels", str(err)) from err
    except UnidentifiedImageError as err:
        raise ItemError("not_an_image", f"no supported image format recognised ({len(data)} bytes)") from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as err:
        raise _decode_error(err, _short_riff(data)) from err
    _check_pixels(img, cfg)
    return img


def _short_riff(data: bytes) -> bool:
    """A WebP (RIFF) file shorter than its header says: libwebp fails at open instead of at load."""
    is_webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return is_webp and int.from_bytes(data[4:8], "little") + 8 > len(data)


def _check_pixels(img: Image.Image, cfg: ImageConfig) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ItemError("corrupt_image", f"image header says {width}x{height}")
    if width * height > cfg.max_pixels:
        raise ItemError(
            "too_many_pixels",
            f"{width}x{height} = {width * height} pixels is over images.max_pixels={cfg.max_pixels}",
        )


def _target_size(size: tuple, max_side: int) -> tuple:
    scale = min(1.0, max_side / max(size))
    return max(1, int(size[0] * scale + 0.999)), max(1, int(size[1] * scale + 0.999))


def _load(img: Image.Image) -> None:
    try:
        img.load()
    except Image.DecompressionBombError as err:
        raise ItemError("too_many_pixels", str(err)) from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as err:
        raise _decode_error(err) from err


def _decode_error(err: Exception, short_file: bool = False) -> ItemError:
    """truncated_image when the data ends early (Pillow says so, or the container is short), else corrupt."""
    said_truncated = isinstance(err, OSError) and "truncated" in str(err).lower()
    if short_file or said_truncated or isinstance(err, EOFError):
        return ItemError("truncated_image", f"image data ends early: {type(err).__name__}: {err}")
    return ItemError("corrupt_image", f"undecodable image: {type(err).__name__}: {err}")


def _apply_orientation(img: Image.Image) -> Image.Image:
    try:
        if img.getexif().get(ExifTags.Base.Orientation, 1) == 1:
            return img
        return ImageOps.exif_transpose(img)
    except (SyntaxError, ValueError, OSError, struct.error, KeyError, TypeError) as err:
        log.warning("ignoring unreadable EXIF orientation (%s: %s)", type(err).__name__, err)
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        return _grey_to_rgb(np.clip(np.asarray(img, dtype=np.int64), 0, 65535) / 257.0)
    if img.mode == "F":
        return _grey_to_rgb(_stretch(np.asarray(img, dtype=np.float64)))
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return _on_white(img)
    if img.mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise ItemError("unsupported_mode", f"no RGB conversion for image mode {img.mode}") from err


def _on_white(img: Image.Image) -> Image.Image:
    canvas = Image.new("RGBA", img.size, _WHITE)
    canvas.alpha_composite(img.convert("RGBA"))
    return canvas.convert("RGB")


def _stretch(values: np.ndarray) -> np.ndarray:
    finite = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(finite.shape)
    return (finite - low) * (255.0 / (high - low))


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    grey8 = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey8] * 3, axis=-1))


def _downscale(img: Image.Image, max_side: int) -> Image.Image:
    if max(img.size) <= max_side:
        return img
    size = _target_size(img.size, max_side)
    size = (min(size[0], max_side), min(size[1], max_side))
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
