"""One run's pipeline pass: run the pending shards, retry items of failed batches alone, mark shards done."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Set

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.batch import object_column
from vlclip_core.config import VlclipConfig
from vlclip_core.pipeline.chain import build_dataset
from vlclip_core.pipeline.heartbeat import pool_stats, start_heartbeat, stop_run_actors
from vlclip_core.pipeline.progress import Progress
from vlclip_core.pipeline.ray_init import init_ray
from vlclip_core.pipeline.shard_writer import (
    OUTPUT_SCHEMA,
    part_name,
    summarise_table,
    write_part,
    write_shard_parts,
)
from vlclip_core.pipeline.watchdog import summaries
from vlclip_core.run.state import RunState

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    rows: int = 0
    ok: int = 0
    errors: int = 0
    detector_items: int = 0
    llm_calls: int = 0
    stage_seconds: Dict[str, float] = field(default_factory=lambda: {n: 0.0 for n in S.STAGE_NAMES})
    wall_seconds: float = 0.0
    pool_stats: Dict[str, dict] = field(default_factory=dict)  # per stage (heartbeat.pool_stats)

    def add(self, summary: Dict) -> None:
        for key in ("rows", "ok", "errors", "detector_items", "llm_calls"):
            setattr(self, key, getattr(self, key) + int(summary[key]))
        for name in S.STAGE_NAMES:
            self.stage_seconds[name] += float(summary.get(S.STAGE_SECONDS_PREFIX + name, 0.0))


def run_pipeline(
    state: RunState, config: VlclipConfig, on_shard_done: Callable[[int], None] = lambda shard: None
) -> PipelineResult:
    """Process the run's pending shards; a shard is marked done once the rows on disk are its staged
    items, each exactly once (its done-marker's counts are read back from those rows), and then handed
    to `on_shard_done` (the run's commit groups). Storage is listed once here, not per batch."""
    state.clear_partial_outputs()
    pending, expected = state.pending_shards(), state.shards()
    total = sum(expected[s] for s in pending)
    result = PipelineResult()
    if not pending:
        return result
    tracker = ShardTracker(state, expected, set(expected) - set(pending), on_shard_done)
    init_ray(config.ray)
    log.info("ray pipeline: %d items in %d shard(s)", total, len(pending))
    heartbeat = start_heartbeat(state.run_id)
    progress = Progress(total, config.job.log_every_s)
    shard_acc: Dict[int, Dict] = {}
    start = time.monotonic()
    try:
        _run_pass(build_dataset(state, pending, config, heartbeat), tracker, config, heartbeat, shard_acc,
                  progress)
        retry = tracker.pending()
        if retry and config.ray.retry_failed_items:
            lost = set().union(
                *(_lost_rows(state, shard, [S.ITEM_ID]).column(S.ITEM_ID).to_pylist() for shard in retry)
            )
            log.warning(
                "%d item(s) were in batches that failed on every retry; running them again one by one",
                len(lost),
            )
            _run_pass(
                build_dataset(state, retry, config, heartbeat, only_items=lost),
                tracker,
                config,
                heartbeat,
                shard_acc,
                progress,
            )
    finally:
        result.pool_stats = pool_stats(heartbeat)
        stop_run_actors(heartbeat)
    for shard in tracker.pending():
        fail_lost_rows(state, shard)
        if not tracker.finish(shard):
            raise RuntimeError(
                f"shard {shard}: the rows on disk do not match its {state.shards()[shard]} staged rows"
            )
    for summary in state.done_summaries():
        result.add(summary)
    result.wall_seconds = time.monotonic() - start
    log_pools(result.pool_stats)
    return result


def log_pools(stats: Dict[str, dict]) -> None:
    for stage, st in stats.items():
        log.info(
            "stage %s (pool %s, %d actor(s), at most %d at once): busy %.1fs; the pool's actors were up "
            "%.1fs after loading (longest load %.1fs), idle %.1fs; first actor ready %.1fs and first "
            "batch %.1fs after the pipeline started",
            stage, st["pool"], st["actors"], st["actors_max"], st["busy_s"], st["actor_seconds"],
            st["load_s"], st["idle_s"], st.get("ready_after_s", 0.0), st.get("first_batch_after_s", 0.0),
        )


class ShardTracker:
    """Which shards are done, kept in memory (listed from storage once per run, not per batch)."""

    def __init__(self, state: RunState, expected: Dict[int, int], done: Set[int], on_done):
        self.state, self.expected, self.done, self.on_done = state, expected, done, on_done

    def pending(self) -> List[int]:
        return sorted(s for s in self.expected if s not in self.done)

    def finish(self, shard: int) -> bool:
        if shard in self.done:
            return True
        if not finish_shard(self.state, shard):
            return False
        self.done.add(shard)
        self.on_done(shard)
        return True


def _run_pass(
    ds, tracker: ShardTracker, config: VlclipConfig, heartbeat, shard_acc: Dict[int, Dict], progress: Progress
) -> None:
    expected = tracker.expected
    for summary in summaries(ds, config.ray.stall_timeout_s, heartbeat):
        _accumulate(shard_acc, summary)
        shard = int(summary["shard"])
        if shard_acc[shard]["rows"] >= expected[shard] and tracker.finish(shard):
            shard_acc.pop(shard)
        progress.update(int(summary["rows"]), done_shards=len(tracker.done), shards=len(expected))


def _accumulate(acc: Dict[int, Dict], summary: Dict) -> None:
    shard = int(summary["shard"])
    current = acc.setdefault(shard, {k: 0 for k in summary if k != "shard"} | {"shard": shard})
    for key, value in summary.items():
        if key != "shard":
            current[key] += value.item() if hasattr(value, "item") else value


def finish_shard(state: RunState, shard: int) -> bool:
    """Mark a shard done when the rows on disk are exactly its staged items, once each.

    Items written twice (a retried batch regrouped by Ray) are deduplicated first: the shard's parts
    are replaced by one part holding one row per item. Returns False while items are missing.
    """
    staged = _staged_ids(state, shard)
    written = _written(state, shard, [S.ITEM_ID])
    ids = written.column(S.ITEM_ID).to_pylist()
    if set(ids) != staged:
        return False
    table = _written(state, shard, None)
    if len(ids) != len(staged):
        table = _compact(state, shard, table)
    state.mark_shard_done(shard, summarise_table(table, shard))
    return True


def _compact(state: RunState, shard: int, table: pa.Table) -> pa.Table:
    """One row per item (an ok row first), written as one part that replaces the shard's parts."""
    log.warning("shard %d: %d row(s) for %d item(s) on disk; keeping one per item", shard, table.num_rows,
                len(set(table.column(S.ITEM_ID).to_pylist())))
    ids, status = table.column(S.ITEM_ID).to_pylist(), table.column(S.STATUS).to_pylist()
    chosen: Dict[str, int] = {}
    for row, (item, st) in enumerate(zip(ids, status)):
        if item not in chosen or (st == S.STATUS_OK and status[chosen[item]] != S.STATUS_OK):
            chosen[item] = row
    unique = table.take(pa.array(sorted(chosen.values()), type=pa.int64()))
    out = state.shard_output(shard)
    old_parts = [n for n in storage.list_dir(out) if n.endswith(".parquet")]
    name = part_name(unique.column(S.ITEM_ID).to_pylist())
    write_part(unique, storage.spark_path(out), name)
    for part in old_parts:
        if part != name:
            storage.delete_file(storage.join(out, part))
    return unique


def fail_lost_rows(state: RunState, shard: int) -> None:
    """Rows of a shard that never reached the writer (their batch kept failing) become error rows."""
    lost = _lost_rows(state, shard, [S.ITEM_ID, S.CONTENT_HASH, S.TEXT_HASH, S.PRODUCT_TYPE, S.IMAGE_URI])
    if lost.num_rows == 0:
        return
    log.error(
        "shard %d: %d item(s) were lost with a batch that kept failing; recording them as errors",
        shard,
        lost.num_rows,
    )
    batch = {name: lost.column(name).to_numpy(zero_copy_only=False) for name in lost.column_names}
    n = lost.num_rows
    batch.update(
        {
            S.SHARD_ID: np.full(n, shard, dtype=np.int32),
            S.STATUS: object_column(n, S.STATUS_ERROR),
            S.ERROR_STAGE: object_column(n, "pipeline"),
            S.ERROR_TYPE: object_column(n, "batch_failed"),
            S.ERROR_MESSAGE: object_column(
                n,
                "its batch failed on every retry (worker crash or stage error); see the Ray logs of this run",
            ),
        }
    )
    write_shard_parts(batch, storage.spark_path(state.path("output")))


def _staged_ids(state: RunState, shard: int) -> set:
    path = storage.spark_path(state.shard_input(shard))
    staged = pq.read_table(path, partitioning=None, columns=[S.ITEM_ID])
    return set(staged.column(S.ITEM_ID).to_pylist())


def _lost_rows(state: RunState, shard: int, columns: List[str]) -> pa.Table:
    """The staged rows of a shard (these columns) that the writer never wrote."""
    staged = pq.read_table(storage.spark_path(state.shard_input(shard)), partitioning=None, columns=columns)
    written = _written_ids(state, shard)
    return staged.filter(pa.array([i not in written for i in staged.column(S.ITEM_ID).to_pylist()]))


def _written_ids(state: RunState, shard: int) -> set:
    return set(_written(state, shard, [S.ITEM_ID]).column(S.ITEM_ID).to_pylist())


def _written(state: RunState, shard: int, columns) -> pa.Table:
    """The rows the writer put in a shard's parts (`columns`, or all); empty when there are none."""
    out = state.shard_output(shard)
    if not any(n.endswith(".parquet") for n in storage.list_dir(out)):
        return OUTPUT_SCHEMA.empty_table().select(columns or OUTPUT_SCHEMA.names)
    return pq.read_table(storage.spark_path(out), columns=columns, partitioning=None, schema=OUTPUT_SCHEMA)
