"""The job via spark-submit on a real cluster: Spark master + worker and a Ray head as separate processes."""

from __future__ import annotations

import glob
import os

import pyarrow as pa
import pytest
from job_helpers import job_overrides

from vlclip_core.tools.cluster_demo import run_on_cluster
from vlclip_core.tools.sample_catalog import read_catalog, write_catalog

# the job gets 600 s; the test more, so that it stops the cluster processes itself when the job overruns
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]
ITEMS = 6


def query(table_dir: str, sql: str) -> list:
    from deltalake import DeltaTable, QueryBuilder

    return pa.table(QueryBuilder().register("t", DeltaTable(table_dir)).execute(sql).read_all()).to_pylist()


def test_spark_submit_on_standalone_master_with_ray_auto(tiny_models, sample_root, tmp_path):
    catalog = write_catalog(
        read_catalog(str(sample_root / "catalog")).slice(0, ITEMS), str(tmp_path / "catalog")
    )
    warehouse = str(tmp_path / "wh")
    sets = [
        arg
        for o in job_overrides(tiny_models, catalog, warehouse)
        if not o.startswith(("catalog.path", "warehouse.path"))
        for arg in ("--set", o)
    ]
    work = str(tmp_path / "cluster")
    run = run_on_cluster(
        work,
        ["--config", "conf/tiny.yaml", "--catalog", catalog, "--warehouse", warehouse] + sets,
        timeout_s=600,
    )

    assert run.returncode == 0, run.stderr[-4000:]
    assert f"selected {ITEMS}, embedded {ITEMS}, failed 0" in run.stdout
    assert f"(master {run.spark_master})" in run.stdout  # the driver used the standalone master
    assert len(run.apps) == 1  # one application whose executor ran on the worker
    assert {"GroundingActor", "EnrichmentActor", "ClipActor"} <= set(
        run.ray_actors
    )  # actors on the started head
    # staged on the shared dir: the work set and the done-markers stay (committed outputs are deleted)
    assert glob.glob(os.path.join(work, "shared", "staging", "*", "input", "shard_id=*"))
    assert glob.glob(os.path.join(work, "shared", "staging", "*", "done", "shard-*.json"))

    ids = query(f"{warehouse}/embeddings", "SELECT item_id, model_version FROM t")
    assert sorted(r["item_id"] for r in ids) == sorted(read_catalog(catalog).column("item_id").to_pylist())
    assert len({r["model_version"] for r in ids}) == 1
    runs = query(f"{warehouse}/runs", "SELECT status, items_embedded FROM t")
    assert runs == [{"status": "succeeded", "items_embedded": ITEMS}]
