"""Run state on real files: the manifest, shard done-markers, partial outputs, finding a run to resume."""

from __future__ import annotations

import json
import re

import pytest

from vlclip_core import storage
from vlclip_core.run.state import (
    COMMITTED,
    FAILED,
    STAGED,
    STAGING,
    create_run,
    find_unfinished,
    new_run_id,
    open_run,
)


def test_new_run_ids_sort_by_time_and_name_the_mode():
    run_id = new_run_id("backfill")
    assert re.fullmatch(r"\d{8}T\d{6}Z-backfill-[0-9a-f]{6}", run_id)
    assert new_run_id("backfill") != run_id


def test_create_writes_the_manifest_and_open_reads_it_back(tmp_path):
    state = create_run(str(tmp_path), "run-a", "incremental", "mv1", "cfg1")
    on_disk = json.loads((tmp_path / "run-a" / "manifest.json").read_text())
    assert {
        k: on_disk[k] for k in ("run_id", "mode", "model_version", "config_hash", "status", "shards")
    } == {
        "run_id": "run-a",
        "mode": "incremental",
        "model_version": "mv1",
        "config_hash": "cfg1",
        "status": STAGING,
        "shards": {},
    }
    state.save(status=STAGED, shards={"0": 3, "2": 5})
    again = open_run(str(tmp_path), "run-a")
    assert (again.run_id, again.status, again.shards()) == ("run-a", STAGED, {0: 3, 2: 5})
    assert open_run(str(tmp_path), "run-b") is None


def test_a_run_id_is_created_once(tmp_path):
    create_run(str(tmp_path), "run-a", "incremental", "mv1", "cfg1")
    with pytest.raises(FileExistsError, match="run run-a already exists"):
        create_run(str(tmp_path), "run-a", "incremental", "mv1", "cfg1")


def test_pending_shards_shrink_as_shards_are_marked_done(tmp_path):
    state = create_run(str(tmp_path), "run-a", "backfill", "mv1", "cfg1")
    state.save(shards={"0": 2, "1": 2, "10": 1})
    assert state.pending_shards() == [0, 1, 10] and state.done_shards() == set()
    state.mark_shard_done(10, {"shard": 10, "rows": 1})
    state.mark_shard_done(0, {"shard": 0, "rows": 2})
    assert state.pending_shards() == [1] and state.done_shards() == {0, 10}
    assert state.done_summaries() == [{"shard": 0, "rows": 2}, {"shard": 10, "rows": 1}]


def test_clear_partial_outputs_removes_only_unfinished_shards(tmp_path):
    state = create_run(str(tmp_path), "run-a", "backfill", "mv1", "cfg1")
    state.save(shards={"0": 1, "1": 1})
    for shard in (0, 1):
        storage.write_json(storage.join(state.shard_output(shard), "part-x.json"), {})
    state.mark_shard_done(0, {"shard": 0, "rows": 1})
    state.clear_partial_outputs()
    assert storage.exists(state.shard_output(0)) and not storage.exists(state.shard_output(1))
    assert state.shard_input(1) == f"{tmp_path}/run-a/input/shard_id=1"


def test_find_unfinished_takes_the_newest_resumable_run_of_the_same_recipe(tmp_path):
    staging = str(tmp_path)
    create_run(staging, "20260101T000000Z-incremental-aaaaaa", "incremental", "mv1", "c")
    create_run(staging, "20260102T000000Z-incremental-bbbbbb", "incremental", "mv1", "c").save(status=STAGED)
    create_run(staging, "20260103T000000Z-incremental-cccccc", "incremental", "mv1", "c").save(
        status=COMMITTED
    )
    create_run(staging, "20260104T000000Z-incremental-dddddd", "incremental", "mv2", "c")
    create_run(staging, "20260105T000000Z-backfill-eeeeee", "backfill", "mv1", "c")
    create_run(staging, "20260106T000000Z-incremental-ffffff", "incremental", "mv1", "c").save(status=FAILED)
    storage.write_json(storage.join(staging, "_LOCK"), {"pid": 1})  # not a run directory
    found = find_unfinished(staging, "incremental", "mv1")
    assert found.run_id == "20260102T000000Z-incremental-bbbbbb" and found.status == STAGED
    assert find_unfinished(staging, "backfill", "mv2") is None


def test_done_markers_are_read_from_storage_once_per_process(tmp_path, monkeypatch):
    state = create_run(str(tmp_path), "run-1", "backfill", "mv1", "cfg")
    state.save(shards={"0": 2, "1": 3, "2": 1})
    state.mark_shard_done(0, {"shard": 0, "rows": 2})
    storage.write_json(state.path("done", "shard-1.json"), {"shard": 1, "rows": 3})  # an earlier attempt's
    reads = []
    real = storage.read_json
    monkeypatch.setattr(storage, "read_json", lambda path: reads.append(path) or real(path))
    assert [s["rows"] for s in state.done_summaries()] == [2, 3]
    assert [s["rows"] for s in state.done_summaries()] == [2, 3]
    assert reads == [state.path("done", "shard-1.json")]  # the marker this process wrote is never read
    reopened = open_run(str(tmp_path), "run-1")
    assert [s["rows"] for s in reopened.done_summaries()] == [2, 3]  # another process reads them all
