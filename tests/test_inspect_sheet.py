"""Tests for the contact-sheet renderer: HTML with embedded thumbnails and boxes, and the PNG grid."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from vlclip_core import schema as S
from vlclip_core.config import ImageConfig
from vlclip_core.tools.inspect_sheet import CAPTION_PX, PRED_COLOUR, render_contact_sheet, sheet_size
from vlclip_core.tools.sample_catalog import TRUE_BOX, make_sample_catalog, read_catalog


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    catalog = read_catalog(make_sample_catalog(str(tmp_path_factory.mktemp("demo")), n_items=4, seed=1))
    result = []
    for k, item in enumerate(catalog.to_pylist()):
        result.append(
            {
                S.ITEM_ID: item[S.ITEM_ID],
                S.IMAGE_URI: item[S.IMAGE_URI],
                S.TITLE: item[S.TITLE],
                S.DESCRIPTION: item[S.DESCRIPTION],
                S.PRODUCT_TYPE: item[S.PRODUCT_TYPE],
                S.ENRICHED_TEXT: f"<b>Clean</b> text {k}",
                S.ENRICHMENT_STATUS: "refined",
                S.GROUNDING_BOX: [0.1, 0.2, 0.6, 0.7],
                S.GROUNDED: True,
                S.GROUNDING_SCORE: 0.5 + k / 10,
                TRUE_BOX: item[TRUE_BOX],
            }
        )
    result.append(
        {
            S.ITEM_ID: "SKU-BROKEN",
            S.IMAGE_URI: "/no/such/file.jpg",
            S.TITLE: "Broken",
            S.DESCRIPTION: None,
            S.ENRICHED_TEXT: None,
            S.ENRICHMENT_STATUS: "fallback",
            S.GROUNDING_BOX: None,
            S.GROUNDED: False,
            S.GROUNDING_SCORE: float("nan"),
            S.PRODUCT_TYPE: "handbag",
        }
    )
    return result


def embedded_images(page: str) -> list:
    encoded = re.findall(r"data:image/png;base64,([^'\"]+)", page)
    return [Image.open(io.BytesIO(base64.b64decode(b64))) for b64 in encoded]


def test_html_has_every_item_an_image_each_and_escaped_text(rows, tmp_path):
    out = render_contact_sheet(rows, str(tmp_path / "sheet.html"), ImageConfig(), thumb_px=200)
    page = open(out, encoding="utf-8").read()
    for row in rows:
        assert f"<h3>{row[S.ITEM_ID]}</h3>" in page
    images = embedded_images(page)
    assert len(images) == len(rows)
    assert all(max(img.size) == 200 for img in images)
    assert "&lt;b&gt;Clean&lt;/b&gt; text 0" in page and "<b>Clean</b>" not in page
    assert "grounded=True score=0.500 box=(0.100, 0.200, 0.600, 0.700)" in page
    assert "grounded=False score=n/a box=(no box)" in page


def test_html_thumbnail_shows_the_grounding_box(rows, tmp_path):
    out = render_contact_sheet(rows[:1], str(tmp_path / "one.html"), ImageConfig())
    page = open(out, encoding="utf-8").read()
    thumb = embedded_images(page)[0].convert("RGB")
    w, h = thumb.size
    x_left, y_mid = int(0.1 * w), int(0.45 * h)
    assert thumb.getpixel((x_left, y_mid)) == PRED_COLOUR
    assert thumb.getpixel((int(0.35 * w), y_mid)) != PRED_COLOUR  # inside the box: the photo, not the outline


def test_png_variant_has_the_grid_size_and_an_error_tile(rows, tmp_path):
    out = render_contact_sheet(rows, str(tmp_path / "sheet.png"), ImageConfig(), columns=2, thumb_px=128)
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (256, 3 * (128 + CAPTION_PX)) == sheet_size(5, 2, 128)
        x, y = 0, 2 * (128 + CAPTION_PX)  # the 5th row's tile: third grid row, first column
        assert img.convert("RGB").getpixel((x + 2, y + 2)) == (200, 200, 200)


def test_bad_arguments_are_named(rows, tmp_path):
    with pytest.raises(ValueError, match="got 0 and 256"):
        render_contact_sheet(rows, str(tmp_path / "x.html"), ImageConfig(), columns=0)
