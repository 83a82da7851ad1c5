"""The run invariant check on real Delta tables: a clean run passes, each kind of violation is named."""

from __future__ import annotations

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import WarehouseConfig
from vlclip_core.run.audit import check_run
from vlclip_core.run.state import create_run
from vlclip_core.warehouse.tables import Tables, table_schema

MV = "mv1"


def rows_of(spark, table, dicts):
    """Rows of `table`'s declared schema; columns not given are null."""
    schema = table_schema(spark, table)
    return spark.createDataFrame([tuple(d.get(f.name) for f in schema.fields) for d in dicts], schema)


def append(tables, table, dicts):
    rows_of(tables.spark, table, dicts).write.format("delta").mode("append").save(tables.location(table))


def committed_run(spark, tmp_path, run_id, embedded, errors, runs_rows=1):
    """A run that staged items a, b, c (hashes h-a, h-b, h-c), with the given table rows written."""
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / run_id / "wh")))
    for table in ("embeddings", "embedding_errors", "runs"):
        tables.ensure(table)
    state = create_run(str(tmp_path / run_id / "staging"), run_id, "incremental", MV, "cfg")
    state.save(shards={"0": 3})
    spark.createDataFrame(
        [(i, f"h-{i}", 0) for i in "abc"], "item_id string, content_hash string, shard_id int"
    ).write.partitionBy(S.SHARD_ID).parquet(storage.spark_path(state.path("input")))
    append(
        tables, "embeddings", [{"item_id": i, "model_version": MV, "content_hash": h} for i, h in embedded]
    )
    append(tables, "embedding_errors", [{"item_id": i, "run_id": run_id, "stage": s} for i, s in errors])
    append(tables, "runs", [{"run_id": run_id}] * runs_rows)
    return tables, state


def test_a_run_whose_items_each_end_once_passes(spark, tmp_path):
    tables, state = committed_run(
        spark,
        tmp_path,
        "r-clean",
        embedded=[("a", "h-a"), ("b", "h-b")],
        errors=[("c", "decode"), ("c", "catalog")],  # a catalog row of the same id is not a second error
    )
    assert check_run(spark, tables, state) == []


def test_each_violation_is_named(spark, tmp_path):
    tables, state = committed_run(
        spark,
        tmp_path,
        "r-broken",
        embedded=[("a", "h-a"), ("b", "h-b"), ("b", "h-b"), ("c", "h-old")],  # b twice; c stale
        errors=[("a", "clip"), ("b", "decode"), ("b", "clip")],  # a and b also failed; b twice
        runs_rows=2,
    )
    assert check_run(spark, tables, state) == [
        "1 duplicated embeddings rows for one (item_id, model_version): ['b']",
        "run r-broken has 2 rows in the runs table (expected 1)",
        "1 duplicated error rows for one item in this run: ['b']",
        "2 item(s) are both embedded and in the errors of run r-broken",
        "1 selected item(s) are neither embedded nor in the errors: ['c']",
    ]
