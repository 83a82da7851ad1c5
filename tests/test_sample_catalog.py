"""Tests for the demo catalog generator: schema, determinism, product types, boxes, the rewrite helper."""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from PIL import Image

from vlclip_core import schema as S
from vlclip_core.tools.sample_catalog import (
    COLOURS,
    PART_FILE,
    PRODUCT_TYPES,
    TRUE_BOX,
    catalog_schema,
    make_sample_catalog,
    read_catalog,
    write_catalog,
)

BRIEF_TYPES = {
    "running shoe",
    "handbag",
    "table lamp",
    "coffee mug",
    "t-shirt",
    "backpack",
    "wristwatch",
    "sunglasses",
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return make_sample_catalog(str(out), n_items=24, seed=7)


def image_digests(table: pa.Table) -> list:
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in table[S.IMAGE_URI].to_pylist()]


def test_schema_and_layout(catalog):
    table = read_catalog(catalog)
    assert table.schema.equals(catalog_schema())
    assert table.schema.field(S.ATTRIBUTES).type == pa.map_(pa.string(), pa.string())
    assert table.schema.field(TRUE_BOX).type == pa.list_(pa.float32())
    assert os.listdir(catalog) == [PART_FILE] and os.path.isabs(catalog)
    assert table.num_rows == 24
    assert table[S.ITEM_ID].to_pylist()[:3] == ["SKU-000000", "SKU-000001", "SKU-000002"]
    assert set(S.REQUIRED_CATALOG_COLUMNS) | set(S.OPTIONAL_CATALOG_COLUMNS) <= set(table.column_names)


def test_every_product_type_appears(catalog):
    types = read_catalog(catalog)[S.PRODUCT_TYPE].to_pylist()
    assert set(PRODUCT_TYPES) == BRIEF_TYPES
    assert {t: types.count(t) for t in BRIEF_TYPES} == {t: 3 for t in BRIEF_TYPES}


def test_same_seed_same_catalog_other_seed_other_catalog(catalog, tmp_path):
    again = read_catalog(make_sample_catalog(str(tmp_path / "a"), n_items=24, seed=7))
    first = read_catalog(catalog)
    for col in (S.ITEM_ID, S.TITLE, S.DESCRIPTION, S.PRODUCT_TYPE, S.ATTRIBUTES, TRUE_BOX):
        assert again[col].to_pylist() == first[col].to_pylist(), col
    assert image_digests(again) == image_digests(first)
    other = read_catalog(make_sample_catalog(str(tmp_path / "b"), n_items=24, seed=8))
    assert other[S.TITLE].to_pylist() != first[S.TITLE].to_pylist()
    assert image_digests(other) != image_digests(first)


def test_an_item_does_not_depend_on_the_catalog_size(catalog, tmp_path):
    small = read_catalog(make_sample_catalog(str(tmp_path / "small"), n_items=5, seed=7))
    assert small[S.TITLE].to_pylist() == read_catalog(catalog)[S.TITLE].to_pylist()[:5]


def test_images_exist_with_box_inside(catalog):
    for row in read_catalog(catalog).to_pylist():
        assert os.path.isabs(row[S.IMAGE_URI]) and row[S.IMAGE_URI].endswith(".jpg")
        with Image.open(row[S.IMAGE_URI]) as img:
            assert img.format == "JPEG" and 320 <= min(img.size) and max(img.size) <= 480
        x0, y0, x1, y1 = row[TRUE_BOX]
        assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
        assert 0.02 < (x1 - x0) * (y1 - y0) < 0.6, row[S.ITEM_ID]


def test_box_encloses_the_product_not_the_background(catalog):
    # The product is drawn last in its box, so the box differs from a same-size strip just outside it.
    row = read_catalog(catalog).to_pylist()[3]
    with Image.open(row[S.IMAGE_URI]) as img:
        w, h = img.size
        x0, y0, x1, y1 = row[TRUE_BOX]
        inside = img.crop((int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h))).convert("RGB")
        colours = inside.getcolors(maxcolors=inside.size[0] * inside.size[1])
    mug_colour = COLOURS[next(c for c in COLOURS if c.lower() == dict(row[S.ATTRIBUTES])["color"])]
    assert row[S.PRODUCT_TYPE] == "coffee mug"
    near = sum(n for n, c in colours if sum(abs(a - b) for a, b in zip(c, mug_colour)) < 60)
    assert near / sum(n for n, _ in colours) > 0.3  # the mug's body fills much of its box


def test_text_is_noisy_but_faithful(catalog):
    for row in read_catalog(catalog).to_pylist():
        attrs = dict(row[S.ATTRIBUTES])
        assert {"brand", "color"} <= set(attrs)
        assert attrs["color"] in row[S.TITLE].lower()
        assert len(row[S.TITLE].split()) >= 8  # keyword-stuffed
        if row[S.DESCRIPTION] is not None:
            assert len(row[S.DESCRIPTION]) > 60


def test_write_catalog_replaces_the_parts(catalog, tmp_path):
    table = read_catalog(catalog)
    titles = table[S.TITLE].to_pylist()
    titles[2] = "Changed title"
    mutated = table.set_column(table.column_names.index(S.TITLE), S.TITLE, pa.array(titles, pa.string()))
    target = tmp_path / "mutated"
    target.mkdir()
    (target / "stale.parquet").write_bytes(b"old")
    path = write_catalog(mutated, str(target))
    assert os.listdir(path) == [PART_FILE]
    back = read_catalog(path)
    assert back[S.TITLE][2].as_py() == "Changed title"
    assert pc.sum(pc.not_equal(back[S.TITLE], table[S.TITLE])).as_py() == 1


def test_rejects_a_non_positive_size(tmp_path):
    with pytest.raises(ValueError, match="n_items must be > 0, got 0"):
        make_sample_catalog(str(tmp_path), n_items=0)
