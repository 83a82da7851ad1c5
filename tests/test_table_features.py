"""Deletion vectors and change data feed as config: what each reader sees, and switching them."""

from __future__ import annotations

import glob
import os

import pyarrow as pa
import pytest

from benchmarks.delta_bench import synthetic_rows
from vlclip_core.config import WarehouseConfig
from vlclip_core.warehouse.tables import Tables, merge_embeddings

VERSION = "features-v1"
ITEM_IDS = [f"SKU-{i:03d}" for i in range(6)]
UPDATED = {"SKU-001": "h1", "SKU-004": "h1"}
EXPECTED = sorted((i, UPDATED.get(i, "h0")) for i in ITEM_IDS)


def merge_keys(spark, tables: Tables, hashes: dict) -> None:
    keys = spark.createDataFrame(sorted(hashes.items()), "item_id string, content_hash string")
    merge_embeddings(tables, synthetic_rows(keys, VERSION, 4, seed=1), VERSION, update_unchanged=False)


@pytest.fixture(scope="module")
def dv_table(spark, tmp_path_factory):
    """An embeddings table made with the defaults (deletion vectors on), 6 rows, 2 of them updated."""
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path_factory.mktemp("features") / "wh")))
    tables.ensure("embeddings")
    merge_keys(spark, tables, {i: "h0" for i in ITEM_IDS})
    merge_keys(spark, tables, UPDATED)
    return tables


def delta_rs(tables: Tables):
    from deltalake import DeltaTable

    return DeltaTable(tables.location("embeddings"))


def test_defaults_give_deletion_vectors_and_the_change_feed(dv_table):
    props = dv_table.properties("embeddings")
    assert props["delta.enableDeletionVectors"] == "true" and props["delta.enableChangeDataFeed"] == "true"
    assert glob.glob(
        os.path.join(dv_table.location("embeddings"), "**", "deletion_vector_*.bin"), recursive=True
    )


def test_recommended_readers_read_the_dv_table_exactly(dv_table):
    import polars as pl
    from deltalake import QueryBuilder

    table = delta_rs(dv_table)
    rows = pa.table(
        QueryBuilder()
        .register("e", table)
        .execute("SELECT item_id, content_hash, model_version FROM e")
        .read_all()
    ).to_pylist()
    assert sorted((r["item_id"], r["content_hash"]) for r in rows) == EXPECTED
    assert {r["model_version"] for r in rows} == {VERSION}
    frame = pl.read_delta(dv_table.location("embeddings")).select("item_id", "content_hash")
    assert sorted(frame.rows()) == EXPECTED


def test_to_pyarrow_table_refuses_the_dv_table(dv_table):
    from deltalake.exceptions import DeltaProtocolError

    with pytest.raises(DeltaProtocolError, match="deletionVectors"):
        delta_rs(dv_table).to_pyarrow_table()


def test_turning_deletion_vectors_off_drops_the_feature_and_keeps_the_rows(spark, dv_table):
    off = Tables(
        spark, WarehouseConfig(path=dv_table.cfg.path, deletion_vectors=False, change_data_feed=False)
    )
    off.ensure("embeddings")
    table = delta_rs(off)
    assert "deletionVectors" not in (table.protocol().reader_features or [])
    rows = table.to_pyarrow_table(columns=["item_id", "content_hash"]).to_pylist()
    assert sorted((r["item_id"], r["content_hash"]) for r in rows) == EXPECTED
    props = off.properties("embeddings")
    assert props.get("delta.enableDeletionVectors", "false") == "false"
    assert props["delta.enableChangeDataFeed"] == "false"
    merge_keys(spark, off, {"SKU-002": "h2"})  # an update now rewrites the file: still readable
    assert len(delta_rs(off).to_pyarrow_table().to_pylist()) == len(ITEM_IDS)

    on = Tables(spark, WarehouseConfig(path=dv_table.cfg.path))
    on.ensure("embeddings")
    props = on.properties("embeddings")
    assert props["delta.enableDeletionVectors"] == "true" and props["delta.enableChangeDataFeed"] == "true"
