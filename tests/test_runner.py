"""The pipeline runner's bookkeeping on real files: lost rows become error rows, summaries add up."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.batch import object_values
from vlclip_core.pipeline.runner import PipelineResult, fail_lost_rows, finish_shard
from vlclip_core.pipeline.shard_writer import write_shard_parts
from vlclip_core.run.state import create_run

STAGED = ["a", "b", "c"]


@pytest.fixture
def state(tmp_path):
    """A run with shard 4 staged (items a, b, c) and nothing written yet."""
    state = create_run(str(tmp_path), "run-1", "backfill", "mv1", "cfg")
    state.save(shards={"4": len(STAGED)})
    columns = {
        S.ITEM_ID: STAGED,
        S.CONTENT_HASH: [f"h-{i}" for i in STAGED],
        S.TEXT_HASH: [f"t-{i}" for i in STAGED],
        S.PRODUCT_TYPE: ["shoe"] * 3,
        S.IMAGE_URI: [f"/img/{i}.jpg" for i in STAGED],
        S.TITLE: ["ignored"] * 3,
    }
    storage.makedirs(state.shard_input(4))
    pq.write_table(pa.table(columns), f"{state.shard_input(4)}/part-0.parquet")
    return state


def write_ok(state, items) -> None:
    """Write `items` (status ok) to shard 4's output, as the writer at the end of the chain does."""
    batch = {
        S.ITEM_ID: object_values(items),
        S.SHARD_ID: pa.array([4] * len(items), pa.int32()).to_numpy(),
        S.STATUS: object_values([S.STATUS_OK] * len(items)),
        S.LLM_CALLS: pa.array([1] * len(items), pa.int32()).to_numpy(),
    }
    write_shard_parts(batch, state.path("output"))


def done_summary(state):
    assert finish_shard(state, 4) is True  # every staged item is on disk once
    [summary] = state.done_summaries()
    return {k: summary[k] for k in ("shard", "rows", "ok", "errors")}


def test_rows_lost_with_their_batch_become_error_rows(state):
    write_ok(state, ["b"])
    assert finish_shard(state, 4) is False  # a and c are missing: not done
    fail_lost_rows(state, 4)
    assert done_summary(state) == {"shard": 4, "rows": 3, "ok": 1, "errors": 2}
    out = pq.read_table(state.shard_output(4), partitioning=None).to_pylist()
    lost = sorted((r[S.ITEM_ID], r[S.CONTENT_HASH], r[S.IMAGE_URI]) for r in out if r[S.STATUS] == "error")
    assert lost == [("a", "h-a", "/img/a.jpg"), ("c", "h-c", "/img/c.jpg")]
    assert {(r[S.ERROR_STAGE], r[S.ERROR_TYPE]) for r in out if r[S.STATUS] == "error"} == {
        ("pipeline", "batch_failed")
    }


def test_a_shard_that_never_reached_the_writer_is_all_errors(state):
    fail_lost_rows(state, 4)
    assert done_summary(state) == {"shard": 4, "rows": 3, "ok": 0, "errors": 3}


def test_a_complete_shard_gets_no_error_rows(state):
    write_ok(state, STAGED)
    fail_lost_rows(state, 4)
    assert done_summary(state) == {"shard": 4, "rows": 3, "ok": 3, "errors": 0}


def test_pipeline_result_adds_shard_summaries():
    result = PipelineResult()
    result.add({"rows": 3, "ok": 2, "errors": 1, "detector_items": 2, "llm_calls": 5, "sec_clip": 1.5})
    result.add({"rows": 1, "ok": 1, "errors": 0, "detector_items": 0, "llm_calls": 1, "sec_decode": 0.25})
    assert (result.rows, result.ok, result.errors, result.detector_items, result.llm_calls) == (4, 3, 1, 2, 6)
    assert result.stage_seconds == {"decode": 0.25, "grounding": 0.0, "enrichment": 0.0, "clip": 1.5}
