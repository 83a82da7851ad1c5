"""The Ray Data pipeline over staged shards: decode tasks -> grounding -> enrichment -> CLIP actor pools -> shard writer."""
from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, Iterator, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import RayConfig, StageResources, VlclipConfig
from vlclip_core.progress import Progress
from vlclip_core.runs import RunState

log = logging.getLogger(__name__)

# shard_id is not written: it is the name of the part's directory (Spark reads it back from there).
OUTPUT_COLUMNS = (
    S.ITEM_ID, S.CONTENT_HASH, S.TEXT_HASH, S.PRODUCT_TYPE, S.IMAGE_URI, S.STATUS, S.ERROR_STAGE,
    S.ERROR_TYPE, S.ERROR_MESSAGE, S.IMAGE_SHA, S.GROUNDING_BOX, S.GROUNDING_SCORE, S.GROUNDED,
    S.GROUNDING_REASON, S.GROUNDING_SOURCE, S.GROUNDING_PROMPT, S.ENRICHED_TEXT, S.ENRICHMENT_STATUS,
    S.ENRICHMENT_REASON, S.ENRICHMENT_SOURCE, S.LLM_CALLS, S.IMAGE_EMBEDDING, S.TEXT_EMBEDDING, S.EMBEDDING,
) + tuple(S.STAGE_SECONDS_PREFIX + name for name in S.STAGE_NAMES)
VECTOR_COLUMNS = (S.GROUNDING_BOX, S.IMAGE_EMBEDDING, S.TEXT_EMBEDDING, S.EMBEDDING)
OUTPUT_TYPES = {S.GROUNDING_SCORE: pa.float32(), S.GROUNDED: pa.bool_(), S.LLM_CALLS: pa.int32(),
                **{c: pa.list_(pa.float32()) for c in VECTOR_COLUMNS},
                **{S.STAGE_SECONDS_PREFIX + n: pa.float64() for n in S.STAGE_NAMES}}
OUTPUT_SCHEMA = pa.schema([(c, OUTPUT_TYPES.get(c, pa.string())) for c in OUTPUT_COLUMNS])

STAGE_CLASSES = {
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


# Few, long-lived workers: a respawned Python worker costs about a CPU-second.
_LOCAL_RAY_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000, "num_workers_soft_limit": 8}


class StageActor:
    """Hosts one stage in a Ray actor: sets torch threads, builds the stage (and its model) once."""

    stage_name = ""

    def __init__(self, config: VlclipConfig, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.stage = load_class(STAGE_CLASSES[self.stage_name])(config)

    def __call__(self, batch):
        return self.stage(batch)


class GroundingActor(StageActor):
    stage_name = "grounding"


class EnrichmentActor(StageActor):
    stage_name = "enrichment"


class ClipActor(StageActor):
    stage_name = "clip"


ACTORS = {"grounding": GroundingActor, "enrichment": EnrichmentActor, "clip": ClipActor}


def decode_task(batch, config: VlclipConfig):
    from vlclip_core.stages.decode import decode_batch

    return decode_batch(batch, config)


def build_dataset(state: RunState, shards: List[int], config: VlclipConfig):
    """Read the pending shards and chain the stages; each stage's resources come from config."""
    import ray

    read_cpus = min(config.stages.decode.num_cpus, 1.0) or 0.25
    ds = ray.data.read_parquet([storage.spark_path(state.shard_input(s)) for s in shards],
                               partitioning=None, num_cpus=read_cpus, include_paths=True)
    ds = ds.map_batches(_add_shard_id, batch_format="numpy", num_cpus=read_cpus)
    res = config.stages.decode
    ds = ds.map_batches(decode_task, fn_kwargs={"config": config}, batch_format="numpy", batch_size=res.batch_size,
                        num_cpus=res.num_cpus, compute=ray.data.TaskPoolStrategy(size=res.num_actors),
                        max_retries=config.ray.max_batch_retries)
    for name in ("grounding", "enrichment", "clip"):
        ds = _add_actor_stage(ds, name, getattr(config.stages, name), config)
    out_dir = storage.spark_path(state.path("output"))
    return ds.map_batches(write_shard_parts, fn_kwargs={"out_dir": out_dir}, batch_format="numpy",
                          batch_size=None, num_cpus=read_cpus, max_retries=config.ray.max_batch_retries)


def _add_actor_stage(ds, name: str, res: StageResources, config: VlclipConfig):
    import ray

    threads = max(1, int(round(res.num_cpus)))
    return ds.map_batches(ACTORS[name], fn_constructor_args=(config, threads), batch_format="numpy",
                          batch_size=res.batch_size, num_cpus=res.num_cpus, num_gpus=res.num_gpus or None,
                          compute=ray.data.ActorPoolStrategy(size=res.num_actors),
                          max_restarts=config.ray.max_batch_retries,
                          max_task_retries=config.ray.max_batch_retries)


def _add_shard_id(batch):
    """The shard id is the name of the directory a row was read from (shard_id=K)."""
    paths = batch.pop("path")
    batch[S.SHARD_ID] = np.array([int(p.rsplit("shard_id=", 1)[1].split("/", 1)[0]) for p in paths], dtype=np.int32)
    return batch


def write_shard_parts(batch, out_dir: str) -> Dict[str, np.ndarray]:
    """Write a batch's rows as one Parquet part per shard; return one summary row per shard."""
    shard_ids = batch[S.SHARD_ID]
    summaries: Dict[str, list] = {"shard": [], "rows": [], "ok": [], "errors": [], "detector_items": [],
                                  "llm_calls": []}
    seconds = {name: [] for name in S.STAGE_NAMES}
    for shard in np.unique(shard_ids):
        rows = np.flatnonzero(shard_ids == shard)
        table = to_arrow({c: batch[c][rows] for c in OUTPUT_COLUMNS if c in batch}, len(rows))
        path = storage.join(out_dir, f"shard_id={int(shard)}", f"part-{uuid.uuid4().hex}.parquet")
        fs, local = storage.resolve(path)
        fs.create_dir(local.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, local, filesystem=fs)
        _summarise(summaries, seconds, batch, rows, int(shard))
    out = {k: np.asarray(v) for k, v in summaries.items()}
    out.update({S.STAGE_SECONDS_PREFIX + k: np.asarray(v, dtype=np.float64) for k, v in seconds.items()})
    return out


def _summarise(summaries, seconds, batch, rows, shard: int) -> None:
    ok = int(np.sum(batch[S.STATUS][rows] == S.STATUS_OK))
    summaries["shard"].append(shard)
    summaries["rows"].append(len(rows))
    summaries["ok"].append(ok)
    summaries["errors"].append(len(rows) - ok)
    summaries["detector_items"].append(int(np.sum(batch[S.GROUNDING_SOURCE][rows] == S.SOURCE_MODEL)))
    summaries["llm_calls"].append(int(np.sum(batch[S.LLM_CALLS][rows].astype(np.int64))))
    for name in S.STAGE_NAMES:
        column = batch.get(S.STAGE_SECONDS_PREFIX + name)
        seconds[name].append(float(np.sum(column[rows])) if column is not None else 0.0)


def to_arrow(columns: Dict[str, np.ndarray], n: int) -> pa.Table:
    """Numpy batch -> Arrow table of OUTPUT_SCHEMA: vectors as list<float32> (null where a row has none)."""
    arrays = []
    for fld in OUTPUT_SCHEMA:
        values = columns.get(fld.name)
        if values is None:
            arrays.append(pa.nulls(n, fld.type))
        elif fld.name in VECTOR_COLUMNS:
            arrays.append(_vectors_to_list(values))
        else:
            arrays.append(pa.array(values.tolist() if values.dtype == object else values, type=fld.type,
                                   from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=OUTPUT_SCHEMA)


def _vectors_to_list(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, dtype=np.float32)
    n, dim = values.shape if values.ndim == 2 else (len(values), 0)
    missing = np.isnan(values).any(axis=1) if dim else np.ones(n, dtype=bool)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim)
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)), type=pa.list_(pa.float32()),
                                    mask=pa.array(missing))


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
    pending = state.pending_shards()
    expected = state.shards()
    total = sum(expected[s] for s in pending)
    result = PipelineResult()
    if not pending:
        return result
    init_ray(config.ray)
    log.info("ray pipeline: %d items in %d shard(s)", total, len(pending))
    progress = Progress(total, config.job.log_every_s)
    shard_acc: Dict[int, Dict] = {}
    start = time.monotonic()
    for summary in _summaries(build_dataset(state, pending, config), config.ray.stall_timeout_s):
        _accumulate(shard_acc, summary)
        shard = int(summary["shard"])
        if shard_acc[shard]["rows"] == expected[shard]:
            state.mark_shard_done(shard, shard_acc[shard])
            result.add(shard_acc.pop(shard))
        progress.update(int(summary["rows"]), done_shards=len(state.done_shards()), shards=len(expected))
    result.wall_seconds = time.monotonic() - start
    _check_complete(state, shard_acc)
    return result


def _accumulate(acc: Dict[int, Dict], summary: Dict) -> None:
    shard = int(summary["shard"])
    current = acc.setdefault(shard, {k: 0 for k in summary if k != "shard"} | {"shard": shard})
    for key, value in summary.items():
        if key != "shard":
            current[key] += value.item() if hasattr(value, "item") else value


def _check_complete(state: RunState, leftovers: Dict[int, Dict]) -> None:
    pending = state.pending_shards()
    if pending or leftovers:
        detail = {s: f"{leftovers.get(s, {}).get('rows', 0)}/{state.shards()[s]}" for s in pending}
        raise RuntimeError(f"pipeline ended with unfinished shards (rows written/expected): {detail}")


def _summaries(ds, stall_timeout_s: float) -> Iterator[Dict]:
    """Iterate the writer's summary rows; fail with PipelineStalledError when nothing arrives in time.

    The dataset is consumed in a thread so that the driver can time out; when the driver stops early
    (error, stall, interruption) the thread closes the iterator, which stops Ray Data's execution.
    """
    results: "queue.Queue" = queue.Queue(maxsize=64)
    stop = threading.Event()
    thread = threading.Thread(target=_consume, args=(ds, results, stop), name="vlclip-pipeline", daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, item = results.get(timeout=stall_timeout_s)
            except queue.Empty:
                raise PipelineStalledError(
                    f"no batch finished for {stall_timeout_s:.0f}s; stage progress: {_stage_progress(ds)}") from None
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


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


def _stage_progress(ds) -> str:
    """Best-effort text of Ray Data's per-operator state, to name the stage that stopped moving."""
    try:
        return ds._get_stats_summary().to_string()[-2000:]
    except Exception as err:  # noqa: BLE001
        return f"unavailable ({type(err).__name__})"
