"""Commit groups: a run merges its finished shards as it goes, each group exactly once (Delta
transaction ids), resumes after a SIGKILL at any boundary without duplicating, reverting or losing a
row, and stops at the first group that breaches its thresholds."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from job_helpers import REPO
from vlclip_core.config import load_config
from vlclip_core.run.audit import check_run
from vlclip_core.run.job import run_job
from vlclip_core.run.state import open_run
from vlclip_core.run.thresholds import RunThresholdError
from vlclip_core.tools.sample_catalog import read_catalog, write_catalog
from vlclip_core.warehouse.spark_session import idempotent_session
from vlclip_core.warehouse.tables import Tables

ITEMS, SHARD, EVERY = 12, 2, 2  # ~6 shards (by item_id hash): groups cut every 2, the last ones final
BROKEN = ("missing-a", "missing-b")  # items whose image file does not exist: decode error rows
SETTINGS = (
    f"job.shard_size={SHARD}",
    f"job.commit_every_shards={EVERY}",
    "job.commit_every_minutes=0",
    "job.log_every_s=1",
    "job.thresholds.max_failed.decode=1.0",
    "job.thresholds.max_failed.any=1.0",
)


def with_missing_images(items: pa.Table, names) -> pa.Table:
    """`items` with the first len(names) items renamed and pointed at image files that do not exist."""
    ids = items.column("item_id").to_pylist()
    uris = items.column("image_uri").to_pylist()
    for row, name in enumerate(names):
        ids[row], uris[row] = name, os.path.join(os.path.dirname(uris[row]), f"{name}.jpg")
    items = items.set_column(items.schema.get_field_index("item_id"), "item_id", pa.array(ids))
    return items.set_column(items.schema.get_field_index("image_uri"), "image_uri", pa.array(uris))


@pytest.fixture
def catalog(sample_root, tmp_path):
    items = read_catalog(str(sample_root / "catalog")).slice(0, ITEMS)
    return write_catalog(with_missing_images(items, BROKEN), str(tmp_path / "catalog"))


def null_config(catalog: str, warehouse, *extra):
    return load_config(
        "conf/null.yaml", (f"catalog.path={catalog}", f"warehouse.path={warehouse}") + SETTINGS + extra
    )


def group_merges(tables: Tables, run_id: str) -> list:
    """The embeddings table's MERGE commits of this run's groups (their userMetadata), oldest first."""
    history = tables.delta("embeddings").history().where("operation = 'MERGE'").orderBy("version")
    mine = f"vlclip run {run_id} "
    return [r.userMetadata for r in history.collect() if mine in (r.userMetadata or "")]


def expected_groups(state) -> int:
    """Groups of EVERY shards are cut while shards remain; the run's last shards are the final group."""
    return (len(state.shards()) - 1) // EVERY + 1


def items_of(spark, state, groups) -> set:
    shards = [s for g in groups for s in g["shards"]]
    if not shards:
        return set()
    paths = [state.shard_input(s) for s in shards]
    return {r.item_id for r in spark.read.parquet(*paths).select("item_id").collect()}


def assert_each_item_once(spark, config, run_id: str) -> None:
    tables = Tables(spark, config.warehouse)
    ids = [r.item_id for r in tables.read("embeddings").collect()]
    errors = [r.item_id for r in tables.read("embedding_errors").where(f"run_id = '{run_id}'").collect()]
    assert len(ids) == len(set(ids)) == ITEMS - len(BROKEN)
    assert sorted(errors) == sorted(BROKEN)
    state = open_run(config.warehouse.staging(), run_id)
    assert state.status == "committed" and check_run(spark, tables, state) == []
    assert len(group_merges(tables, run_id)) == expected_groups(state)  # no group merged twice
    assert not os.listdir(state.path("output"))  # each group's staged outputs were deleted


def test_a_repeated_write_of_one_group_is_skipped_by_its_transaction_id(spark, tmp_path):
    from delta.tables import DeltaTable

    path = str(tmp_path / "t")
    spark.range(2).write.format("delta").save(path)

    def merge(session, start, stop):
        (
            DeltaTable.forPath(session, path).alias("t")
            .merge(session.range(start, stop).alias("s"), "t.id = s.id")
            .whenNotMatchedInsertAll().execute()
        )

    group0 = idempotent_session(spark, "run-a", 0)
    merge(group0, 2, 4)
    merge(group0, 4, 6)  # a repeat of group 0 (a resumed run): skipped
    merge(idempotent_session(spark, "run-a", 1), 6, 8)
    merge(idempotent_session(spark, "run-b", 0), 8, 9)  # another run's group 0
    spark.range(9, 10).write.format("delta").mode("append").save(path)  # the parent session is untagged
    ids = sorted(r.id for r in spark.read.format("delta").load(path).collect())
    assert ids == [0, 1, 2, 3, 6, 7, 8, 9]


def assert_committed_in_groups_as_it_went(spark, config, report) -> None:
    """The run cut its shards into groups of EVERY (the last one final), committed and published each,
    and its runs row showed the committed items while it went on."""
    assert (report.items_embedded, report.items_failed) == (ITEMS - len(BROKEN), len(BROKEN))
    state = open_run(config.warehouse.staging(), report.run_id)
    groups = state.manifest["groups"]
    assert len(state.shards()) >= 4 and len(groups) == expected_groups(state) >= 2
    assert [g["final"] for g in groups] == [False] * (len(groups) - 1) + [True]
    assert all(len(g["shards"]) == EVERY for g in groups[:-1])
    assert sorted(s for g in groups for s in g["shards"]) == sorted(state.shards())
    assert all(g["status"] == "committed" and g["published"] for g in groups)
    # the runs row showed the committed items while the run went on (time travel to each version)
    tables = Tables(spark, config.warehouse)
    seen = []
    for row in tables.delta("runs").history().orderBy("version").collect():
        runs = spark.read.format("delta").option("versionAsOf", row.version).load(tables.location("runs"))
        seen += [(r.status, r.items_embedded) for r in runs.where(f"run_id = '{report.run_id}'").collect()]
    running = [n for status, n in seen if status == "running"]
    assert len(running) == len(groups) - 1 and running == sorted(running)
    assert running[-1] < ITEMS - len(BROKEN) and seen[-1] == ("succeeded", ITEMS - len(BROKEN))


# where the job SIGKILLs itself, and how many groups' embeddings MERGEs have committed by then
KILL_POINTS = {
    # the manifest not yet staged: the resumed run does every phase itself, like a fresh run
    "staging": ("--kill-after", "vlclip_core.run.job:write_work_set", 0),
    # group 1's embeddings MERGE committed; its caches, failed images and error rows may not have
    "inside a group": ("--kill-after", "vlclip_core.run.commit:merge_embeddings:2", 2),
    "before the runs row": ("--kill-before", "vlclip_core.run.job:record_committed", None),  # all
}


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("where", list(KILL_POINTS))
def test_a_run_sigkilled_at_a_boundary_resumes_with_every_item_once(spark, catalog, tmp_path, where):
    """Killed while staging, the resumed run also shows that a run commits in groups as it goes."""
    flag, point, merged = KILL_POINTS[where]
    warehouse, marker = tmp_path / "wh", tmp_path / "killed-at"
    sets = [a for o in (f"catalog.path={catalog}", f"warehouse.path={warehouse}") + SETTINGS
            for a in ("--set", o)]
    proc = subprocess.run(
        [sys.executable, "tests/kill_driver.py", flag, point, "--marker", str(marker), "--",
         "--config", "conf/null.yaml", *sets],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=400, text=True,
    )
    assert proc.returncode == -9 and marker.read_text().endswith(point), proc.stderr[-3000:]
    config = null_config(catalog, warehouse)
    tables = Tables(spark, config.warehouse)
    (run_id,) = [n for n in os.listdir(config.warehouse.staging()) if not n.startswith("_")]
    killed = open_run(config.warehouse.staging(), run_id)
    groups = killed.manifest.get("groups", [])
    merged = len(groups) if merged is None else merged
    # what a reader saw of the killed run: exactly the ok items of the groups whose MERGE committed
    assert len(group_merges(tables, run_id)) == merged
    visible = {r.item_id for r in tables.read("embeddings").collect()}
    assert visible == items_of(spark, killed, groups[:merged]) - set(BROKEN)
    if where == "before the runs row":
        assert killed.status == "committed" and not killed.manifest["runs_row_done"]
        report = run_job(null_config(catalog, warehouse, "job.mode=incremental"), spark)
        assert report.run_id != run_id and report.items_embedded == 0
        rows = tables.read("runs").where(f"run_id = '{run_id}'").collect()
        assert [(r.status, r.items_embedded) for r in rows] == [("succeeded", ITEMS - len(BROKEN))]
    else:
        report = run_job(config, spark)
        assert report.resumed and report.run_id == run_id
        assert (report.items_embedded, report.items_failed) == (ITEMS - len(BROKEN), len(BROKEN))
        if where == "staging":
            assert_committed_in_groups_as_it_went(spark, config, report)
    assert_each_item_once(spark, config, run_id)


@pytest.mark.usefixtures("ray_local")
def test_the_first_group_that_breaches_a_threshold_stops_the_run(spark, sample_root, tmp_path):
    """A broken model (here: every image missing) stops a run at its first group: that group's error
    rows are written, its embeddings held back, and no later group is committed."""
    items = read_catalog(str(sample_root / "catalog")).slice(0, ITEMS)
    names = [f"missing-{i}" for i in range(ITEMS)]
    broken = write_catalog(with_missing_images(items, names), str(tmp_path / "broken"))
    config = null_config(
        broken, tmp_path / "wh", "job.thresholds.max_failed.decode=0.5", "job.thresholds.min_items=1"
    )
    with pytest.raises(RunThresholdError, match=r"failed at decode: .*Commit group 0's embeddings"):
        run_job(config, spark)
    tables = Tables(spark, config.warehouse)
    (run_id,) = [n for n in os.listdir(config.warehouse.staging()) if not n.startswith("_")]
    state = open_run(config.warehouse.staging(), run_id)
    groups = state.manifest["groups"]
    assert state.status == "failed" and len(state.shards()) >= 4
    assert [(g["group"], g["status"], g["published"]) for g in groups] == [(0, "committed", False)]
    assert tables.read("embeddings").count() == 0
    errors = {r.item_id for r in tables.read("embedding_errors").collect()}
    assert errors == items_of(spark, state, groups) and len(errors) < ITEMS
    row = tables.read("runs").where(f"run_id = '{run_id}'").first()
    assert row.status == "failed" and "Commit group 0" in row.message
