"""One run's pipeline pass: run the pending shards, retry items of failed batches alone, mark shards done."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.batch import object_column
from vlclip_core.config import VlclipConfig
from vlclip_core.pipeline.chain import build_dataset
from vlclip_core.pipeline.heartbeat import start_heartbeat, stop_run_actors
from vlclip_core.pipeline.progress import Progress
from vlclip_core.pipeline.ray_init import init_ray
from vlclip_core.pipeline.shard_writer import OUTPUT_SCHEMA, write_shard_parts
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

    def add(self, summary: Dict) -> None:
        for key in ("rows", "ok", "errors", "detector_items", "llm_calls"):
            setattr(self, key, getattr(self, key) + int(summary[key]))
        for name in S.STAGE_NAMES:
            self.stage_seconds[name] += float(summary.get(S.STAGE_SECONDS_PREFIX + name, 0.0))


def run_pipeline(state: RunState, config: VlclipConfig) -> PipelineResult:
    """Process the run's pending shards; a shard is marked done once all its rows are written."""
    state.clear_partial_outputs()
    pending, expected = state.pending_shards(), state.shards()
    total = sum(expected[s] for s in pending)
    result = PipelineResult()
    if not pending:
        return result
    init_ray(config.ray)
    log.info("ray pipeline: %d items in %d shard(s)", total, len(pending))
    heartbeat = start_heartbeat(state.run_id)
    progress = Progress(total, config.job.log_every_s)
    shard_acc: Dict[int, Dict] = {}
    start = time.monotonic()
    try:
        _run_pass(
            build_dataset(state, pending, config, heartbeat), state, config, heartbeat, shard_acc, progress
        )
        retry = state.pending_shards()
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
                state,
                config,
                heartbeat,
                shard_acc,
                progress,
            )
    finally:
        stop_run_actors(heartbeat)
    for shard in state.pending_shards():
        state.mark_shard_done(shard, fail_lost_rows(state, shard, shard_acc.get(shard)))
    for summary in state.done_summaries():
        result.add(summary)
    result.wall_seconds = time.monotonic() - start
    return result


def _run_pass(
    ds, state: RunState, config: VlclipConfig, heartbeat, shard_acc: Dict[int, Dict], progress: Progress
) -> None:
    expected = state.shards()
    for summary in summaries(ds, config.ray.stall_timeout_s, heartbeat):
        _accumulate(shard_acc, summary)
        shard = int(summary["shard"])
        if shard_acc[shard]["rows"] == expected[shard]:
            state.mark_shard_done(shard, shard_acc.pop(shard))
        progress.update(int(summary["rows"]), done_shards=len(state.done_shards()), shards=len(expected))


def _accumulate(acc: Dict[int, Dict], summary: Dict) -> None:
    shard = int(summary["shard"])
    current = acc.setdefault(shard, {k: 0 for k in summary if k != "shard"} | {"shard": shard})
    for key, value in summary.items():
        if key != "shard":
            current[key] += value.item() if hasattr(value, "item") else value


def fail_lost_rows(state: RunState, shard: int, summary: Optional[Dict]) -> Dict:
    """Rows of a shard that never reached the writer (their batch kept failing) become error rows."""
    lost = _lost_rows(state, shard, [S.ITEM_ID, S.CONTENT_HASH, S.TEXT_HASH, S.PRODUCT_TYPE, S.IMAGE_URI])
    if lost.num_rows == 0:
        raise RuntimeError(
            f"shard {shard} is incomplete but none of its items is missing: "
            f"summary {summary} does not match its {state.shards()[shard]} staged rows"
        )
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
    lost_summary = {
        k: v[0].item() for k, v in write_shard_parts(batch, storage.spark_path(state.path("output"))).items()
    }
    if summary:
        return {k: (summary.get(k, 0) + v if k != "shard" else v) for k, v in lost_summary.items()}
    return lost_summary


def _lost_rows(state: RunState, shard: int, columns: List[str]) -> pa.Table:
    """The staged rows of a shard (these columns) that the writer never wrote."""
    staged = pq.read_table(storage.spark_path(state.shard_input(shard)), partitioning=None, columns=columns)
    written = _written_ids(state, shard)
    return staged.filter(pa.array([i not in written for i in staged.column(S.ITEM_ID).to_pylist()]))


def _written_ids(state: RunState, shard: int) -> set:
    out = state.shard_output(shard)
    if not storage.exists(out):
        return set()
    return set(
        pq.read_table(storage.spark_path(out), columns=[S.ITEM_ID], partitioning=None, schema=OUTPUT_SCHEMA)
        .column(S.ITEM_ID)
        .to_pylist()
    )
