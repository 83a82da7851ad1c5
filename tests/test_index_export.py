"""Two job runs into a warehouse without deletion vectors: delta-rs reads it, the ANN index follows CDF."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from job_helpers import job_overrides

from vlclip_core.config import load_config
from vlclip_core.index.ann import ItemIndex, exact_neighbours
from vlclip_core.index.export import (
    FULL,
    INCREMENTAL,
    export_indexes,
    export_one,
    index_directory,
)
from vlclip_core.run.job import run_job
from vlclip_core.tools.sample_catalog import read_catalog, write_catalog
from vlclip_core.warehouse.tables import Tables, table_version

pytestmark = pytest.mark.usefixtures("ray_local")
ITEMS = 10
K = 4


def second_catalog(first: pa.Table) -> pa.Table:
    """Item 0 retitled (update), item 1 gone (delete), a copy of item 2 under a new id (insert)."""
    rows = first.to_pylist()
    rows[0]["title"] = rows[0]["title"] + " (new edition)"
    added = dict(rows[2], item_id="SKU-NEW-0001", title=rows[2]["title"] + " twin")
    return pa.Table.from_pylist([rows[0]] + rows[2:] + [added], schema=first.schema)


@pytest.fixture(scope="module")
def runs(spark, tiny_models, sample_root, tmp_path_factory):
    """Run 1 over ITEMS items, a full index export, run 2 over the changed catalog (removed_items=delete)."""
    root = tmp_path_factory.mktemp("index")
    first = read_catalog(str(sample_root / "catalog")).slice(0, ITEMS)
    catalog = write_catalog(first, str(root / "catalog"))

    def config():
        return load_config(
            "conf/tiny.yaml",
            job_overrides(tiny_models, catalog, str(root / "wh"))
            + (
                "warehouse.deletion_vectors=false",
                "job.removed_items=delete",
                f"index.path={root / 'index'}",
            ),
        )

    run_job(config(), spark)
    hashes_1 = dict(embedded_rows(spark, config()))
    exported_1 = export_indexes(spark, config())
    write_catalog(second_catalog(first), catalog)
    report_2 = run_job(config(), spark)
    return {
        "root": root,
        "config": config(),
        "first": first,
        "hashes_1": hashes_1,
        "exported_1": exported_1,
        "report_2": report_2,
    }


def embedded_rows(spark, config):
    rows = Tables(spark, config.warehouse).read("embeddings").select("item_id", "content_hash").collect()
    return [(r.item_id, r.content_hash) for r in rows]


def test_dv_off_table_reads_with_delta_rs_to_pyarrow_table(runs):
    from deltalake import DeltaTable

    config, first = runs["config"], runs["first"].to_pylist()
    assert runs["report_2"].items_removed == 1 and runs["report_2"].items_embedded == 2
    table = DeltaTable(f"{config.warehouse.path}/embeddings")
    assert "deletionVectors" not in (table.protocol().reader_features or [])
    rows = table.to_pyarrow_table(columns=["item_id", "model_version", "content_hash"]).to_pylist()
    expected_ids = sorted([first[0]["item_id"]] + [r["item_id"] for r in first[2:]] + ["SKU-NEW-0001"])
    assert sorted(r["item_id"] for r in rows) == expected_ids
    assert {r["model_version"] for r in rows} == {config.model_version}
    hashes = {r["item_id"]: r["content_hash"] for r in rows}
    assert hashes[first[0]["item_id"]] != runs["hashes_1"][first[0]["item_id"]]
    assert all(
        hashes[i] == runs["hashes_1"][i]
        for i in expected_ids
        if i not in (first[0]["item_id"], "SKU-NEW-0001")
    )


def current_vectors(spark, config):
    rows = Tables(spark, config.warehouse).read("embeddings").select("item_id", "embedding").collect()
    return [r.item_id for r in rows], np.asarray([r.embedding for r in rows], dtype=np.float32)


def neighbour_sets(index: ItemIndex, ids):
    return {item_id: {hit for hit, _ in index.similar(item_id, K)} for item_id in ids}


def test_incremental_export_matches_a_full_rebuild_and_exact_search(spark, runs, capsys):
    from jobs.export_index import main

    config, root = runs["config"], runs["root"]
    assert [(r.mode, r.items) for r in runs["exported_1"]] == [(FULL, ITEMS)]
    assert (
        main(
            [
                "--config",
                "conf/tiny.yaml",
                "--warehouse",
                config.warehouse.path,
                "--out",
                str(root / "index"),
                "build",
            ]
        )
        == 0
    )
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(p["mode"], p["upserted"], p["removed"], p["items"]) for p in printed] == [
        (INCREMENTAL, 2, 1, ITEMS)
    ]
    assert printed[0]["from_version"] == runs["exported_1"][0].delta_version + 1

    ids, vectors = current_vectors(spark, config)
    incremental = ItemIndex.load(index_directory(str(root / "index"), config.model_version))
    rebuilt_dir = str(root / "rebuilt" / config.model_version)
    export_one(
        Tables(spark, config.warehouse),
        config.model_version,
        table_version(Tables(spark, config.warehouse), "embeddings"),
        config.index,
        rebuilt_dir,
        full=True,
    )
    rebuilt = ItemIndex.load(rebuilt_dir)
    exact = exact_neighbours(vectors, vectors, K + 1)
    expected = {item_id: {ids[j] for j in row if ids[j] != item_id} for item_id, row in zip(ids, exact)}
    assert neighbour_sets(incremental, ids) == expected == neighbour_sets(rebuilt, ids)
    assert incremental.removed == 2  # the deleted item and the updated item's old vector, masked
    deleted = runs["first"].column("item_id")[1].as_py()
    assert deleted not in {hit for hits in expected.values() for hit in hits}
    assert all(deleted not in {h for h, _ in row} for row in incremental.search(vectors, ITEMS))
    with pytest.raises(KeyError):
        incremental.similar(deleted, K)


def test_similar_cli_prints_the_nearest_items(runs, capsys):
    from jobs.export_index import main

    config, root = runs["config"], runs["root"]
    item = "SKU-NEW-0001"
    assert (
        main(
            [
                "--config",
                "conf/tiny.yaml",
                "--warehouse",
                config.warehouse.path,
                "--out",
                str(root / "index"),
                "similar",
                "--model-version",
                config.model_version,
                "--item-id",
                item,
                "-k",
                "3",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    index = ItemIndex.load(index_directory(str(root / "index"), config.model_version))
    assert [line.split("\t")[0] for line in lines] == [hit for hit, _ in index.similar(item, 3)]
    assert len(lines) == 3 and item not in lines[0]


def test_export_rebuilds_in_full_when_the_change_feed_misses_a_version(spark, runs):
    config = runs["config"]
    tables = Tables(spark, config.warehouse)
    removed = runs["first"].column("item_id")[3].as_py()
    spark.sql(
        f"ALTER TABLE {tables.ref('embeddings')} SET TBLPROPERTIES (delta.enableChangeDataFeed = false)"
    )
    spark.sql(f"DELETE FROM {tables.ref('embeddings')} WHERE item_id = '{removed}'")
    spark.sql(f"ALTER TABLE {tables.ref('embeddings')} SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    [result] = export_indexes(spark, config)
    assert result.mode == FULL and result.reason.startswith("change data feed unavailable")
    assert result.items == ITEMS - 1
    index = ItemIndex.load(result.directory)
    assert removed not in index.labels and index.removed == 0
