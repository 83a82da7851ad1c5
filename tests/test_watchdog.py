"""The pipeline watchdog: summaries pass through in order, errors surface, a stall names the stuck stage."""

from __future__ import annotations

import os
import threading
import time

import pytest

from vlclip_core.pipeline.heartbeat import start_heartbeat, stop_run_actors
from vlclip_core.pipeline.watchdog import PipelineStalledError, summaries


class Rows:
    """A dataset stand-in with Ray Data's iter_rows(): yields `rows`, then blocks or raises.

    `closed` is set when the consumer closes the iterator (what stops Ray Data's execution).
    """

    def __init__(self, rows, then=None, before_block=None):
        self.rows, self.then, self.before_block = rows, then, before_block
        self.release, self.closed = threading.Event(), threading.Event()

    def iter_rows(self):
        try:
            yield from self.rows
            if self.then is not None:
                raise self.then
            if self.before_block is not None:
                self.before_block()
                self.release.wait(60)
        finally:
            self.closed.set()


def test_rows_pass_through_in_order():
    ds = Rows([{"shard": i} for i in range(100)])  # more rows than the hand-over queue holds
    assert [r["shard"] for r in summaries(ds, stall_timeout_s=30)] == list(range(100))
    assert ds.closed.wait(5)


def test_an_error_of_the_pipeline_reaches_the_driver_as_raised():
    ds = Rows([{"shard": 0}], then=KeyError("writer failed"))
    got = []
    with pytest.raises(KeyError, match="writer failed"):
        for row in summaries(ds, stall_timeout_s=30):
            got.append(row)
    assert got == [{"shard": 0}]


def test_a_driver_that_stops_early_closes_the_pipeline():
    ds = Rows([{"shard": i} for i in range(200)])  # the consumer waits on a full hand-over queue
    rows = summaries(ds, stall_timeout_s=30)
    assert next(rows) == {"shard": 0}
    rows.close()
    assert ds.closed.wait(10)


def _retained_block_stats(ds) -> list:
    """How many per-block stats each operator of `ds`'s execution still holds (Ray Data internals)."""
    return [len(op._output_blocks_stats) for op in ds._current_executor._topology
            if hasattr(op, "_output_blocks_stats")]


@pytest.mark.usefixtures("ray_local")
def test_the_driver_keeps_the_stats_of_the_newest_blocks_only(monkeypatch):
    """Ray Data holds one stats object per output block for a Dataset's whole run (ray-project/ray#66016):
    the consumer trims them, so the driver does not grow with the blocks of a long backfill."""
    import ray

    from vlclip_core.pipeline import watchdog

    monkeypatch.setattr(watchdog, "KEEP_BLOCK_STATS", 10)
    monkeypatch.setattr(watchdog, "TRIM_EVERY_ROWS", 10)
    blocks = 120
    ds = ray.data.range(2 * blocks, override_num_blocks=blocks).map_batches(lambda b: b, batch_size=None)
    assert sorted(r["id"] for r in summaries(ds, stall_timeout_s=120)) == list(range(2 * blocks))
    retained = _retained_block_stats(ds)
    assert retained, "Ray Data no longer keeps per-block stats where the trim looks for them"
    # at most the newest 10, plus the blocks of the 10 rows since the last trim, per operator
    assert max(retained) <= 10 + 10, retained


def test_a_stall_without_heartbeats_fails_after_the_timeout():
    ds = Rows([{"shard": 0}], before_block=lambda: None)
    start = time.monotonic()
    got = []
    try:
        with pytest.raises(PipelineStalledError, match=r"no progress for 1s: stage state unavailable"):
            for row in summaries(ds, stall_timeout_s=1.0):
                got.append(row)
    finally:
        ds.release.set()
    assert got == [{"shard": 0}] and 1.0 <= time.monotonic() - start < 30


@pytest.mark.usefixtures("ray_local")
def test_a_stall_names_the_stage_that_holds_a_batch():
    """A stage begins a batch (a real heartbeat actor records it) and never ends it."""
    import ray

    heartbeat = start_heartbeat("test-watchdog")
    ray.get(heartbeat.snapshot.remote(), timeout=120)  # the actor is up before the clock starts
    ds = Rows(
        [{"shard": 0}],
        before_block=lambda: heartbeat.begin.remote("token-1", "grounding", time.time(), os.getpid()),
    )
    try:
        with pytest.raises(PipelineStalledError) as err:
            list(summaries(ds, stall_timeout_s=2.0, heartbeat=heartbeat))
    finally:
        ds.release.set()
        stop_run_actors(heartbeat)
    assert str(err.value).startswith("no progress for 2s: stage 'grounding' has held a batch for ")
    assert f"(worker pid {os.getpid()}); batches done: none" in str(err.value)
