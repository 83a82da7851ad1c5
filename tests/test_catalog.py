"""Catalog reading, schema validation, invalid-row split and hashing, on real local Spark + Delta."""

from __future__ import annotations

import pytest

from vlclip_core import schema as S
from vlclip_core.config import CatalogConfig, WarehouseConfig
from vlclip_core.selection.catalog import (
    CatalogSchemaError,
    load_hashed,
    read_catalog,
    validate_schema,
    with_text_hashes,
)
from vlclip_core.selection.workset import CLASS, INVALID, SELECTED, classify
from vlclip_core.warehouse.tables import Tables

ROWS = [
    ("a", "Red Shoe", "http://x/a.jpg", "soft", "running shoe", {"color": "red", "size": "9"}),
    ("b", "Blue Bag", "http://x/b.jpg", None, "handbag", None),
    ("c", "Lamp", "http://x/c.jpg", "bright", "table lamp", {"size": "M"}),
]
DDL = (
    "item_id string, title string, image_uri string, description string, product_type string, "
    "attributes map<string,string>"
)


def write(spark, rows, path, fmt="parquet", ddl=DDL):
    spark.createDataFrame(rows, ddl).write.format(fmt).mode("overwrite").save(str(path))
    return str(path)


def valid_and_invalid(spark, path, model_version="mv1", llm_identity="llm1"):
    """The job's split of a catalog: load_hashed + classify, then the work set's text hashes.

    Backfill selects every valid row and reads no warehouse table, so the warehouse is never created.
    """
    from pyspark.sql import functions as F

    tables = Tables(spark, WarehouseConfig(path=path + "-warehouse"))
    classified = classify(
        load_hashed(spark, CatalogConfig(path=path), model_version), tables, "backfill", model_version
    )
    valid = with_text_hashes(classified.where(F.col(CLASS) == SELECTED), llm_identity)
    return valid, classified.where(F.col(CLASS) == INVALID).select(S.ITEM_ID, S.ERROR_TYPE, S.ERROR_MESSAGE)


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
    path = write(
        spark, [("a", "t", "u")], tmp_path / "min", ddl="item_id string, title string, image_uri string"
    )
    valid, invalid = valid_and_invalid(spark, path)
    assert valid.count() == 1 and invalid.count() == 0
    assert valid.first().attributes_json is None


def test_invalid_rows_are_split_off_with_reasons(spark, tmp_path):
    rows = ROWS + [
        (None, "t", "u", None, None, None),
        (" ", "t", "u", None, None, None),
        ("d", "t", None, None, None, None),
        ("a", "dup", "u", None, None, None),
    ]
    path = write(spark, rows, tmp_path / "cat")
    valid, invalid = valid_and_invalid(spark, path)
    assert sorted(r.item_id for r in valid.collect()) == ["b", "c"]
    got = sorted((r.item_id or "", r.error_type, r.error_message) for r in invalid.collect())
    assert got == [
        ("", "null_item_id", "item_id is null or blank"),
        (" ", "null_item_id", "item_id is null or blank"),
        ("a", "duplicate_item_id", "item_id appears 2 times"),
        ("a", "duplicate_item_id", "item_id appears 2 times"),
        ("d", "missing_image_uri", "image_uri is null or blank"),
    ]


def test_hashes_are_stable_and_follow_their_inputs(spark, tmp_path):
    def hashes(rows, mv="mv1", llm="llm1"):
        path = write(spark, rows, tmp_path / f"h{abs(hash((str(rows), mv, llm)))}")
        valid = valid_and_invalid(spark, path, mv, llm)[0]
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


def test_hashes_match_stored_values(spark, tmp_path):
    """Hashes already stored in users' tables must keep matching: a change to how the job computes them
    would silently re-embed every item (content hash) or miss the enrichment cache (text hash).
    """
    rows = [
        (
            "a",
            "Red Shoe",
            "http://x/a.jpg",
            "soft",
            "running shoe",
            {"size": "9", "color": "red", "Brand": "ACME", "fit": None},
        ),
        ("b", "Blue Bag", "http://x/b.jpg", None, None, None),
        ("c", 'Ünïcode "quoted"', "http://x/c.jpg", "line\nbreak", "lamp", {}),
    ]
    catalog = CatalogConfig(path=write(spark, rows, tmp_path / "g"))
    df = with_text_hashes(load_hashed(spark, catalog, "mv1"), "llm1")
    got = {r.item_id: (r.text_hash, r.attributes_json, r.content_hash) for r in df.collect()}
    assert got == {
        "a": (
            "ecc67ffbbdef284dd40e08186398b9add3a573bfb3390b576b6f9caca4e2242a",
            '{"Brand":"ACME","color":"red","fit":null,"size":"9"}',
            X1["a"],
        ),
        "b": ("cdb2f9d2d82da1c93a1c2394b6f9a6a27e9cb915e08da3039687949723d1221a", None, X1["b"]),
        "c": ("4e998825fe6715121253ccaa2cf63379c051c7c45f4c42a4a9d951fee79bf680", "{}", X1["c"]),
    }


# x1 content hashes of the rows above, as vlclip computed them when the scheme was introduced
X1 = {
    "a": "x1:54273FC8A7AE668BDAE05F7B159E360E",
    "b": "x1:E6FD1DF6FA612F0AD3AD1CF8AAB608CA",
    "c": "x1:66848CE2AFE36DB5CE1F25FE9F34D586",
}


def test_fingerprint_tells_apart_what_its_hash_function_would_not(spark, tmp_path):
    """Spark's xxhash64 skips nulls; the x1 scheme must still see which field or key holds a null."""

    def content(rows):
        path = write(spark, rows, tmp_path / f"f{abs(hash(str(rows)))}")
        return {r.item_id: r.content_hash for r in valid_and_invalid(spark, path)[0].collect()}

    variants = {
        "null value moved to another key": [{"color": None, "size": "M"}, {"color": "M", "size": None}],
        "text moved between null fields": [("x", None), (None, "x")],
        "no attributes vs empty attributes": [None, {}],
        "value containing the separator": [{"a": "p", "b": "q"}, {"a": "p\u0000q", "b": None}],
    }
    for name, (left, right) in variants.items():
        if isinstance(left, tuple):
            rows = [("l", "t", "u", *left, None), ("r", "t", "u", *right, None)]
        else:
            rows = [("l", "t", "u", "d", "p", left), ("r", "t", "u", "d", "p", right)]
        hashes = content(rows)
        assert hashes["l"] != hashes["r"], name
        assert hashes["l"].startswith("x1:") and len(hashes["l"]) == 35
