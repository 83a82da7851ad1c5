"""Catalog reading, schema validation, invalid-row split and hashing, on real local Spark + Delta."""
from __future__ import annotations

import pytest

from vlclip_core.catalog import CatalogSchemaError, load_valid_and_invalid, read_catalog, validate_schema
from vlclip_core.config import CatalogConfig

ROWS = [("a", "Red Shoe", "http://x/a.jpg", "soft", "running shoe", {"color": "red", "size": "9"}),
        ("b", "Blue Bag", "http://x/b.jpg", None, "handbag", None),
        ("c", "Lamp", "http://x/c.jpg", "bright", "table lamp", {"size": "M"})]
DDL = "item_id string, title string, image_uri string, description string, product_type string, " \
      "attributes map<string,string>"


def write(spark, rows, path, fmt="parquet", ddl=DDL):
    spark.createDataFrame(rows, ddl).write.format(fmt).mode("overwrite").save(str(path))
    return str(path)


def test_delta_catalog_is_detected_and_filter_is_applied(spark, tmp_path):
    path = write(spark, ROWS, tmp_path / "cat", fmt="delta")
    df = read_catalog(spark, CatalogConfig(path=path, filter="product_type = 'handbag'"))
    assert [r.item_id for r in df.collect()] == ["b"]


def test_schema_errors_name_each_missing_and_mistyped_column(spark, tmp_path):
    bad = write(spark, [("a", 5, "x")], tmp_path / "bad", ddl="item_id string, title int, attributes string")
    with pytest.raises(CatalogSchemaError) as err:
        validate_schema(read_catalog(spark, CatalogConfig(path=bad)))
    message = str(err.value)
    assert "missing required column 'image_uri' (string)" in message
    assert "column 'title' must be string, found int" in message
    assert "optional column 'attributes' must be map<string,string>, found string" in message


def test_optional_columns_may_be_absent(spark, tmp_path):
    path = write(spark, [("a", "t", "u")], tmp_path / "min", ddl="item_id string, title string, image_uri string")
    valid, invalid = load_valid_and_invalid(spark, CatalogConfig(path=path), "mv1", "llm1")
    assert valid.count() == 1 and invalid.count() == 0
    assert valid.first().attributes_json is None


def test_invalid_rows_are_split_off_with_reasons(spark, tmp_path):
    rows = ROWS + [(None, "t", "u", None, None, None), (" ", "t", "u", None, None, None),
                   ("d", "t", None, None, None, None), ("a", "dup", "u", None, None, None)]
    path = write(spark, rows, tmp_path / "cat")
    valid, invalid = load_valid_and_invalid(spark, CatalogConfig(path=path), "mv1", "llm1")
    assert sorted(r.item_id for r in valid.collect()) == ["b", "c"]
    got = sorted((r.item_id or "", r.error_type, r.error_message) for r in invalid.collect())
    assert got == [("", "null_item_id", "item_id is null or blank"),
                   (" ", "null_item_id", "item_id is null or blank"),
                   ("a", "duplicate_item_id", "item_id appears 2 times"),
                   ("a", "duplicate_item_id", "item_id appears 2 times"),
                   ("d", "missing_image_uri", "image_uri is null or blank")]


def test_hashes_are_stable_and_follow_their_inputs(spark, tmp_path):
    def hashes(rows, mv="mv1", llm="llm1"):
        path = write(spark, rows, tmp_path / f"h{abs(hash((str(rows), mv, llm)))}")
        valid = load_valid_and_invalid(spark, CatalogConfig(path=path), mv, llm)[0]
        return {r.item_id: (r.content_hash, r.text_hash, r.attributes_json) for r in valid.collect()}

    base = hashes(ROWS)
    assert hashes(ROWS) == base
    assert base["a"][2] == '{"color":"red","size":"9"}'
    reordered = [ROWS[0][:5] + ({"size": "9", "color": "red"},)] + ROWS[1:]
    assert hashes(reordered)["a"] == base["a"]  # map order does not matter
    new_uri = [ROWS[0][:2] + ("http://x/a2.jpg",) + ROWS[0][3:]] + ROWS[1:]
    changed = hashes(new_uri)
    assert changed["a"][0] != base["a"][0] and changed["a"][1] == base["a"][1]  # image only: same text hash
    assert changed["b"] == base["b"]
    other_llm = hashes(ROWS, llm="llm2")
    assert other_llm["a"][1] != base["a"][1] and other_llm["a"][0] == base["a"][0]
    assert hashes(ROWS, mv="mv2")["a"][0] != base["a"][0]
