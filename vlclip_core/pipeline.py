"""The Ray Data pipeline over staged shards: decode tasks -> grounding -> enrichment -> CLIP actor pools -> shard writer."""
from __future__ import annotations

import dataclasses
import importlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import RayConfig, StageResources, VlclipConfig
from vlclip_core.heartbeat import (beating, describe_stall, register_current_actor, start_heartbeat,
                                   stop_run_actors)
from vlclip_core.progress import Progress
from vlclip_core.runs import RunState
from vlclip_core.shard_writer import OUTPUT_SCHEMA, write_shard_parts

log = logging.getLogger(__name__)

STAGE_CLASSES = {
    "decode": "vlclip_core.stages.decode:DecodeStage",
    "grounding": "vlclip_core.stages.grounding:GroundingStage",
    "enrichment": "vlclip_core.stages.enrichment:EnrichmentStage",
    "clip": "vlclip_core.stages.clip_encode:ClipStage",
}


class PipelineStalledError(RuntimeError):
    """No batch finished within ray.stall_timeout_s."""


def load_class(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def init_ray(cfg: RayConfig) -> None:
    """Start an in-process Ray (address local) or join a cluster; reuse one already running."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, log_to_driver=True, runtime_env=cfg.runtime_env or None)
        if cfg.address == "local":
            ray.init(address="local", num_cpus=cfg.num_cpus, _system_config=_LOCAL_RAY_SYSTEM_CONFIG, **kwargs)
        else:
            ray.init(address=cfg.address, **kwargs)
    context = DataContext.get_current()
    # The v2 Parquet path adds a listing step that always asks for a whole CPU: on small nodes whose
    # actors reserve the rest, the pipeline would wait for it forever.
    context.use_datasource_v2 = False
    context.enable_progress_bars = False
    # A batch that still fails after its retries is dropped by Ray Data (up to this many) and its
    # rows become error rows (fail_lost_rows); one more ends the run.
    context.max_errored_blocks = cfg.max_failed_batches


# Few, long-lived workers: a respawned Python worker costs about a CPU-second.
_LOCAL_RAY_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000, "num_workers_soft_limit": 8}


class StageActor:
    """Hosts one stage in a Ray actor: sets torch threads, builds the stage (and its model) once."""

    stage_name = ""

    def __init__(self, config: VlclipConfig, threads: int, heartbeat=None):
        import torch

        torch.set_num_threads(threads)
        self.stage = stage_class(config, self.stage_name)(config)
        self.heartbeat = heartbeat
        register_current_actor(heartbeat)

    def __call__(self, batch):
        return beating(self.heartbeat, self.stage_name, self.stage, batch)


class GroundingActor(StageActor):
    stage_name = "grounding"


class EnrichmentActor(StageActor):
    stage_name = "enrichment"


class ClipActor(StageActor):
    stage_name = "clip"


ACTORS = {"grounding": GroundingActor, "enrichment": EnrichmentActor, "clip": ClipActor}


def stage_class(config: VlclipConfig, name: str):
    """The stage's class: `stages.<name>.impl` when configured, else the built-in one."""
    return load_class(getattr(config.stages, name).impl or STAGE_CLASSES[name])


def decode_task(batch, config: VlclipConfig, heartbeat=None):
    """Decode runs as plain CPU tasks: the stage is cheap to build, so it is built per batch."""
    return beating(heartbeat, "decode", stage_class(config, "decode")(config), batch)


def build_dataset(state: RunState, shards: List[int], config: VlclipConfig, heartbeat=None,
                  only_items: Optional[set] = None):
    """Read the pending shards and chain the stages; each stage's resources come from config.

    With `only_items`, only those item ids are read and every stage takes one item per batch (and
    one batch per actor at a time): the isolation pass for items of failed batches.
    """
    import ray

    read_cpus = min(config.stages.decode.num_cpus, 1.0) or 0.25
    ds = ray.data.read_parquet([storage.spark_path(state.shard_input(s)) for s in shards],
                               partitioning=None, num_cpus=read_cpus, include_paths=True)
    ds = ds.map_batches(_add_shard_id, batch_format="numpy", num_cpus=read_cpus)
    if only_items is not None:
        ds = ds.map_batches(_keep_items, fn_kwargs={"items": only_items}, batch_format="numpy", num_cpus=read_cpus)
        ds = ds.repartition(max(1, len(only_items)))  # a task takes a whole block: one item per block
        config = _one_item_per_batch(config)
    res = config.stages.decode
    ds = ds.map_batches(decode_task, fn_kwargs={"config": config, "heartbeat": heartbeat}, batch_format="numpy",
                        batch_size=res.batch_size, num_cpus=res.num_cpus,
                        compute=ray.data.TaskPoolStrategy(size=res.num_actors),
                        max_retries=config.ray.max_batch_retries)
    for name in ("grounding", "enrichment", "clip"):
        ds = _add_actor_stage(ds, name, getattr(config.stages, name), config, heartbeat)
    out_dir = storage.spark_path(state.path("output"))
    return ds.map_batches(write_shard_parts, fn_kwargs={"out_dir": out_dir}, batch_format="numpy",
                          batch_size=None, num_cpus=read_cpus, max_retries=config.ray.max_batch_retries)


def _add_actor_stage(ds, name: str, res: StageResources, config: VlclipConfig, heartbeat):
    import ray

    threads = max(1, int(round(res.num_cpus)))
    return ds.map_batches(ACTORS[name], fn_constructor_args=(config, threads, heartbeat), batch_format="numpy",
                          batch_size=res.batch_size, num_cpus=res.num_cpus, num_gpus=res.num_gpus or None,
                          compute=ray.data.ActorPoolStrategy(
                              size=res.num_actors,
                              max_tasks_in_flight_per_actor=config.ray.max_tasks_in_flight_per_actor),
                          # Restarts are unbounded and batch retries bounded: Ray Data (2.60) never
                          # replaces an actor that ran out of restarts, so a fixed-size pool would keep
                          # the dead actor and hang. A crash loop is caught by the stall detector.
                          max_restarts=-1,
                          max_task_retries=config.ray.max_batch_retries)


def _one_item_per_batch(config: VlclipConfig) -> VlclipConfig:
    stages = dataclasses.replace(config.stages, **{
        name: dataclasses.replace(getattr(config.stages, name), batch_size=1) for name in S.STAGE_NAMES})
    return dataclasses.replace(config, stages=stages,
                               ray=dataclasses.replace(config.ray, max_tasks_in_flight_per_actor=1))


def _keep_items(batch, items: set):
    keep = np.array([i in items for i in batch[S.ITEM_ID]], dtype=bool)
    return {name: column[keep] for name, column in batch.items()}


def _add_shard_id(batch):
    """The shard id is the name of the directory a row was read from (shard_id=K)."""
    paths = batch.pop("path")
    batch[S.SHARD_ID] = np.array([int(p.rsplit("shard_id=", 1)[1].split("/", 1)[0]) for p in paths], dtype=np.int32)
    return batch


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
        _run_pass(build_dataset(state, pending, config, heartbeat), state, config, heartbeat, shard_acc, progress)
        retry = state.pending_shards()
        if retry and config.ray.retry_failed_items:
            lost = set().union(*(_lost_rows(state, shard, [S.ITEM_ID]).column(S.ITEM_ID).to_pylist()
                                 for shard in retry))
            log.warning("%d item(s) were in batches that failed on every retry; running them again one by one",
                        len(lost))
            _run_pass(build_dataset(state, retry, config, heartbeat, only_items=lost), state, config, heartbeat,
                      shard_acc, progress)
    finally:
        stop_run_actors(heartbeat)
    for shard in state.pending_shards():
        state.mark_shard_done(shard, fail_lost_rows(state, shard, shard_acc.get(shard)))
    for summary in state.done_summaries():
        result.add(summary)
    result.wall_seconds = time.monotonic() - start
    return result


def _run_pass(ds, state: RunState, config: VlclipConfig, heartbeat, shard_acc: Dict[int, Dict],
              progress: Progress) -> None:
    expected = state.shards()
    for summary in _summaries(ds, config.ray.stall_timeout_s, heartbeat):
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
        raise RuntimeError(f"shard {shard} is incomplete but none of its items is missing: "
                           f"summary {summary} does not match its {state.shards()[shard]} staged rows")
    log.error("shard %d: %d item(s) were lost with a batch that kept failing; recording them as errors",
              shard, lost.num_rows)
    batch = {name: lost.column(name).to_numpy(zero_copy_only=False) for name in lost.column_names}
    n = lost.num_rows
    batch.update({S.SHARD_ID: np.full(n, shard, dtype=np.int32), S.STATUS: np.full(n, S.STATUS_ERROR, dtype=object),
                  S.ERROR_STAGE: np.full(n, "pipeline", dtype=object),
                  S.ERROR_TYPE: np.full(n, "batch_failed", dtype=object),
                  S.ERROR_MESSAGE: np.full(n, "its batch failed on every retry (worker crash or stage error); "
                                              "see the Ray logs of this run", dtype=object)})
    lost_summary = {k: v[0].item() for k, v in write_shard_parts(batch, storage.spark_path(state.path("output"))).items()}
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
    return set(pq.read_table(storage.spark_path(out), columns=[S.ITEM_ID], partitioning=None,
                             schema=OUTPUT_SCHEMA).column(S.ITEM_ID).to_pylist())


def _summaries(ds, stall_timeout_s: float, heartbeat=None) -> Iterator[Dict]:
    """Iterate the writer's summary rows; fail with PipelineStalledError when the pipeline stops moving.

    Progress is a finished batch or any stage heartbeat (an actor ready, a batch begun or ended), so
    slow model loading is not a stall but a batch held past the timeout is. The dataset is consumed
    in a thread so that the driver can time out; when the driver stops early (error, stall,
    interruption) the thread closes the iterator, which stops Ray Data's execution.
    """
    results: "queue.Queue" = queue.Queue(maxsize=64)
    stop = threading.Event()
    thread = threading.Thread(target=_consume, args=(ds, results, stop), name="vlclip-pipeline", daemon=True)
    thread.start()
    last_progress = time.time()
    try:
        while True:
            try:
                kind, item = results.get(timeout=min(stall_timeout_s, _POLL_S))
            except queue.Empty:
                snapshot = _snapshot(heartbeat)
                last_progress = max(last_progress, (snapshot or {}).get("last_event", 0.0))
                if time.time() - last_progress > stall_timeout_s:
                    raise PipelineStalledError(f"no progress for {stall_timeout_s:.0f}s: "
                                               f"{describe_stall(snapshot)}") from None
                continue
            if kind == "end":
                return
            if kind == "error":
                raise item
            last_progress = time.time()
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)  # a thread blocked on a stuck batch ends when the run stops its actors


_POLL_S = 5.0


def _snapshot(heartbeat):
    import ray

    try:
        return ray.get(heartbeat.snapshot.remote(), timeout=10) if heartbeat is not None else None
    except Exception as err:  # noqa: BLE001 - the stall itself is the error to report
        log.warning("could not read stage heartbeats: %s", err)
        return None


def _consume(ds, results: "queue.Queue", stop: threading.Event) -> None:
    rows = iter(ds.iter_rows())
    try:
        for row in rows:
            if not _put(results, ("row", row), stop):
                return
        _put(results, ("end", None), stop)
    except BaseException as err:  # noqa: BLE001 - handed to the driver thread, which re-raises it
        _put(results, ("error", err), stop)
    finally:
        close = getattr(rows, "close", None)
        if close:
            close()


def _put(results: "queue.Queue", item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            results.put(item, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False
