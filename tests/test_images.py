"""Tests for vlclip_core.images.codec: real encoded images of every awkward kind through decode_image."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin, features

from vlclip_core.config import ImageConfig
from vlclip_core.errors import ItemError
from vlclip_core.images.codec import decode_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noisy(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def error_type(data: bytes, cfg: ImageConfig = ImageConfig()) -> str:
    with pytest.raises(ItemError) as info:
        decode_image(data, cfg)
    return info.value.error_type


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (RGB, 8 bit) but carries almost no pixel data."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def test_rgb_jpeg_round_trip_keeps_size_and_colour():
    out = decode_image(encode(Image.new("RGB", (64, 48), (200, 40, 40)), "JPEG", quality=95), ImageConfig())
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    assert np.abs(out.astype(int) - [200, 40, 40]).max() <= 6


def test_png_is_downscaled_to_max_side():
    out = decode_image(encode(noisy(1000, 500), "PNG"), ImageConfig(max_side=200))
    assert out.shape == (100, 200, 3)


def test_jpeg_uses_draft_mode_then_fits_max_side(monkeypatch):
    scales = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        scales.append(self.decoderconfig[0])
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = decode_image(encode(noisy(2000, 1000), "JPEG"), ImageConfig(max_side=300))
    assert scales == [4]  # 2000/4 = 500 >= 300 > 2000/8
    assert out.shape == (150, 300, 3)


def test_small_image_is_not_upscaled():
    assert decode_image(encode(noisy(30, 20), "PNG"), ImageConfig(max_side=800)).shape == (20, 30, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_truncated_image_is_reported_not_padded(fmt):
    data = encode(noisy(256, 256), fmt)
    assert error_type(data[: len(data) * 6 // 10]) == "truncated_image"


def test_truncated_webp_is_reported():
    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    data = encode(noisy(128, 128), "WEBP")
    assert error_type(data[: len(data) // 2]) == "truncated_image"


def test_not_an_image_and_empty_bytes():
    assert error_type(b"hello, I am a text file\n" * 20) == "not_an_image"
    assert error_type(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n") == "not_an_image"
    assert error_type(b"") == "empty_file"


def test_header_claiming_huge_dimensions_is_refused_before_decoding():
    # 144 M pixels: over our limit, under Pillow's own error limit (2 x 89 M). Loading these pixels
    # would fail as truncated_image, so too_many_pixels proves the header check came first.
    with pytest.raises(ItemError) as info, pytest.warns(Image.DecompressionBombWarning):
        decode_image(png_header_only(12_000, 12_000), ImageConfig(max_pixels=64_000_000))
    assert info.value.error_type == "too_many_pixels"
    assert "12000x12000" in info.value.message and "images.max_pixels=64000000" in info.value.message
    assert error_type(png_header_only(100, 100), ImageConfig()) == "truncated_image"


def test_pillow_bomb_error_maps_to_too_many_pixels():
    # Our limit is above Pillow's own (2 x 89 M pixels): Pillow's DecompressionBombError fires first.
    with pytest.raises(ItemError) as info:
        decode_image(png_header_only(20_000, 20_000), ImageConfig(max_pixels=10**10))
    assert info.value.error_type == "too_many_pixels"
    assert "images.max_pixels" not in info.value.message


def test_real_image_over_max_pixels():
    data = encode(Image.new("RGB", (1200, 1000), (10, 10, 10)), "PNG")
    assert error_type(data, ImageConfig(max_pixels=1_000_000)) == "too_many_pixels"
    assert decode_image(data, ImageConfig(max_pixels=1_200_000, max_side=1200)).shape == (1000, 1200, 3)


def test_cmyk_jpeg_becomes_rgb():
    cmyk_red = Image.new("CMYK", (32, 32), (0, 255, 255, 0))
    out = decode_image(encode(cmyk_red, "JPEG", quality=95), ImageConfig())
    assert out.shape == (32, 32, 3)
    r, g, b = out[16, 16].astype(int)
    assert r > 230 and g < 30 and b < 30


def test_palette_with_transparency_is_composited_on_white():
    img = Image.new("P", (20, 10), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (10, 0, 20, 10))
    out = decode_image(encode(img, "PNG", transparency=1), ImageConfig())
    assert out[5, 2].tolist() == [255, 0, 0]
    assert out[5, 15].tolist() == [255, 255, 255]


def test_semi_transparent_rgba_and_la_are_composited_on_white():
    rgba = decode_image(encode(Image.new("RGBA", (8, 8), (0, 0, 0, 128)), "PNG"), ImageConfig())
    assert np.abs(rgba[4, 4].astype(int) - 127).max() <= 1
    la = decode_image(encode(Image.new("LA", (8, 8), (0, 0)), "PNG"), ImageConfig())
    assert la[4, 4].tolist() == [255, 255, 255]


def test_16_bit_grey_is_scaled_to_8_bit():
    grey = np.array([[0, 65535], [257 * 100, 1000]], dtype=np.uint16)
    out = decode_image(encode(Image.fromarray(grey), "PNG"), ImageConfig())
    assert out[..., 0].tolist() == [[0, 255], [100, 4]]
    assert (out[..., 0] == out[..., 2]).all()


def test_32_bit_integer_grey_tiff():
    img = Image.fromarray(np.array([[0, 65535, 70000]], dtype=np.int32))
    assert img.mode == "I"
    out = decode_image(encode(img, "TIFF"), ImageConfig())
    assert out[0, :, 1].tolist() == [0, 255, 255]


def test_one_bit_image_becomes_black_and_white_rgb():
    img = Image.new("1", (8, 8), 0)
    img.paste(1, (4, 0, 8, 8))
    out = decode_image(encode(img, "PNG"), ImageConfig())
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 7].tolist() == [255, 255, 255]


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert decode_image(data, ImageConfig())[8, 8].tolist() == [255, 0, 0]


def test_animated_webp_gives_the_first_frame():
    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    frames = [Image.new("RGB", (16, 16), c) for c in ((0, 0, 255), (255, 0, 0))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert decode_image(data, ImageConfig())[8, 8].tolist() == [0, 0, 255]


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    out = decode_image(encode(img, "JPEG", quality=95, exif=exif), ImageConfig())
    assert out.shape == (40, 20, 3)  # portrait now
    top, bottom = out[5, 10].astype(int), out[35, 10].astype(int)
    assert top[0] > 200 and top[2] < 60  # the left (red) half is on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_rotated_image_still_fits_max_side():
    exif = Image.Exif()
    exif[0x0112] = 8
    out = decode_image(encode(noisy(900, 300), "JPEG", exif=exif), ImageConfig(max_side=150))
    assert out.shape == (150, 50, 3)


def test_jpeg_cut_inside_its_headers_is_truncated():
    data = encode(Image.new("RGB", (64, 48), (200, 40, 40)), "JPEG")
    assert error_type(data[: len(data) // 2]) == "truncated_image"


def test_png_with_garbage_pixel_data_is_corrupt():
    data = bytearray(encode(noisy(64, 64), "PNG"))
    start = data.index(b"IDAT") + 100
    data[start : start + 50] = b"\x00" * 50  # zlib stream broken mid-way, file length unchanged
    assert error_type(bytes(data)) == "corrupt_image"
