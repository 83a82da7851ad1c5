"""Index export streamed from Delta in batches: same as one batch, null embeddings skipped, fsspec paths."""

from __future__ import annotations

import numpy as np
import pytest

from vlclip_core import schema as S
from vlclip_core.config import IndexConfig, WarehouseConfig, VlclipConfig
from vlclip_core.index.ann import ItemIndex, exact_neighbours, read_state
from vlclip_core.index.export import FULL, INCREMENTAL, export_indexes, export_one
from vlclip_core.warehouse.tables import Tables, table_schema, table_version

DIM = 16
N = 60
MV = "mv-stream"
NULLS = (7, 30)  # rows written without an embedding


def vectors(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def embedding_rows(spark, ids, vecs, nulls=()):
    schema = table_schema(spark, "embeddings")
    rows = [
        {S.ITEM_ID: i, S.MODEL_VERSION: MV, "content_hash": f"h-{i}", S.EMBEDDING: v.tolist()}
        for i, v in zip(ids, vecs)
    ]
    for k in nulls:
        rows[k][S.EMBEDDING] = None
    return spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in rows], schema)


@pytest.fixture(scope="module")
def table(spark, tmp_path_factory):
    """An embeddings table of N rows (2 without an embedding), spread over several files."""
    root = tmp_path_factory.mktemp("stream")
    tables = Tables(spark, WarehouseConfig(path=str(root / "wh")))
    tables.ensure("embeddings")
    ids, vecs = [f"item-{i:03d}" for i in range(N)], vectors(N, 1)
    embedding_rows(spark, ids, vecs, NULLS).repartition(5).write.format("delta").mode("append").save(
        tables.location("embeddings")
    )
    return {"tables": tables, "root": root, "ids": ids, "vectors": vecs}


def search_all(index, vecs, k=6):
    return [[h for h, _ in row] for row in index.search(vecs, k)]


def test_batches_smaller_than_the_table_give_the_index_of_one_batch(table):
    tables, root = table["tables"], table["root"]
    version = table_version(tables, "embeddings")
    whole = export_one(tables, MV, version, IndexConfig(batch_size=10_000), str(root / "whole"), full=True)
    small = export_one(tables, MV, version, IndexConfig(batch_size=7), str(root / "small"), full=True)
    assert (whole.mode, whole.upserted, whole.skipped_null, whole.items) == (FULL, N - 2, 2, N - 2)
    assert (small.upserted, small.skipped_null, small.items) == (N - 2, 2, N - 2)
    a, b = ItemIndex.load(whole.directory), ItemIndex.load(small.directory)
    assert a.ids == b.ids and search_all(a, table["vectors"]) == search_all(b, table["vectors"])
    live = [k for k in range(N) if k not in NULLS]
    exact = exact_neighbours(table["vectors"][live], table["vectors"][live], 6)
    assert search_all(b, table["vectors"][live]) == [[table["ids"][live[j]] for j in row] for row in exact]


def test_ivfpq_export_to_a_memory_url_follows_the_change_feed(spark, table):
    tables, ids = table["tables"], table["ids"]
    config = VlclipConfig()
    config.warehouse = tables.cfg
    config.index = IndexConfig(path="memory://vlclip-index-test", kind="ivfpq", pq_m=8, batch_size=9)
    [first] = export_indexes(spark, config)
    assert (first.mode, first.kind, first.items, first.skipped_null) == (FULL, "ivfpq", N - 2, 2)
    assert first.directory == f"memory://vlclip-index-test/{MV}"
    assert read_state(first.directory)["ivfpq"] == {"nlist": 1, "pq_m": 8, "nbits": 5}

    changed = vectors(3, 2)  # item 0 and item 7 (was null) get new vectors, item-new is added
    embedding_rows(spark, [ids[0], ids[7], "item-new"], changed).createOrReplaceTempView("stream_src")
    spark.sql(
        f"MERGE INTO {tables.ref('embeddings')} t USING stream_src s ON t.item_id = s.item_id "
        "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
    )
    spark.sql(f"DELETE FROM {tables.ref('embeddings')} WHERE item_id IN ('{ids[1]}', '{ids[30]}')")
    [second] = export_indexes(spark, config)
    assert (second.mode, second.upserted, second.removed, second.skipped_null) == (INCREMENTAL, 3, 1, 0)
    index = ItemIndex.load(second.directory)
    assert second.items == len(index) == N - 2 + 2 - 1
    assert ids[1] not in index.labels and {ids[7], "item-new"} <= set(index.labels)
    # PQ codes are approximate (8 sub-quantizers of 16-d vectors): the updated item is among the first
    # three hits of its new vector, which its old random vector would almost never be
    hits = search_all(index, changed, 3)
    assert [want in row for want, row in zip([ids[0], ids[7], "item-new"], hits)] == [True, True, True]
