"""One run of the catalog-embedding job: stage the work set (Spark), run the stages (Ray), commit (Delta MERGE)."""
from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.catalog import load_hashed, normalise, read_catalog
from vlclip_core.config import ConfigError, VlclipConfig, _digest
from vlclip_core.failed_images import record_failures
from vlclip_core.pipeline import PipelineResult, run_pipeline
from vlclip_core.preflight import check_models
from vlclip_core.runs import (COMMITTED, FAILED, FINAL, PROCESSED, STAGED, STAGING, RunState, create_run,
                              find_unfinished, new_run_id, open_run, run_lock, utcnow)
from vlclip_core.spark_session import get_spark
from vlclip_core.tables import (Tables, delete_removed_items, insert_new, literal_row, merge_embeddings,
                                removed_items, replace_run_errors, table_schema, write_run)
from vlclip_core.thresholds import RunThresholdError, breaches
from vlclip_core.workset import stage_work

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What one run did: the row it appends to the `runs` table."""

    run_id: str
    mode: str
    model_version: str
    config_hash: str
    status: str = "running"
    started_at: object = None
    finished_at: object = None
    items_seen: int = 0
    items_invalid: int = 0  # catalog rows rejected before selection (null/duplicate id, no image_uri)
    items_selected: int = 0
    items_embedded: int = 0
    items_failed: int = 0
    items_removed: int = 0
    items_skipped: int = 0  # not fetched: their image failed for good recently (failed_images)
    detector_calls: int = 0
    llm_calls: int = 0
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    stage_items_per_s: Dict[str, float] = field(default_factory=dict)
    error_counts: Dict[str, int] = field(default_factory=dict)
    outcome_counts: Dict[str, int] = field(default_factory=dict)
    message: Optional[str] = None
    resumed: bool = False
    tables: Dict[str, str] = field(default_factory=dict)


def llm_identity(config: VlclipConfig) -> str:
    """Identity of the enrichment recipe; part of every text_hash so caches never mix LLMs/prompts."""
    return _digest(config.models.llm.identity())[:16]


def detector_identity(config: VlclipConfig) -> str:
    return _digest(config.models.detector.identity())[:16]


def run_job(config: VlclipConfig, spark=None) -> RunReport:
    """Run (or resume) one job run end to end and return its report; raises on failure after recording it."""
    _check_job_config(config)
    check_models(config)
    spark = spark or get_spark(config.spark)
    tables = Tables(spark, config.warehouse)
    tables.ensure_all()
    staging = config.warehouse.staging()
    storage.makedirs(staging)
    with run_lock(spark, staging, config.warehouse.run_lock, config.job.run_id or config.job.mode):
        state = _open_state(config, staging)
        report = _new_report(config, state, tables)
        try:
            _advance(spark, tables, state, config, report)
        except BaseException as err:
            _record_failure(spark, tables, state, report, err)
            raise
    return report


def _check_job_config(config: VlclipConfig) -> None:
    if config.job.removed_items == "delete" and config.catalog.filter:
        raise ConfigError("job.removed_items=delete cannot be combined with catalog.filter: items outside "
                          "the filter would be deleted")


def _open_state(config: VlclipConfig, staging: str) -> RunState:
    job = config.job
    if job.run_id:
        state = open_run(staging, job.run_id)
        if state and state.status in FINAL:
            raise ConfigError(f"run {job.run_id} is already {state.status}; start a new run without job.run_id")
        if state:
            log.info("resuming run %s (status %s)", state.run_id, state.status)
            return state
        return create_run(staging, job.run_id, job.mode, config.model_version, config.config_hash)
    if job.resume:
        state = find_unfinished(staging, job.mode, config.model_version)
        if state:
            log.info("resuming unfinished run %s (status %s)", state.run_id, state.status)
            return state
    return create_run(staging, new_run_id(job.mode), job.mode, config.model_version, config.config_hash)


def _new_report(config: VlclipConfig, state: RunState, tables: Tables) -> RunReport:
    return RunReport(run_id=state.run_id, mode=state.manifest["mode"], model_version=config.model_version,
                     config_hash=config.config_hash, started_at=utcnow(), resumed=state.status != STAGING,
                     tables={t: tables.ref(t) for t in ("embeddings", "embedding_errors", "runs")})


def _advance(spark, tables: Tables, state: RunState, config: VlclipConfig, report: RunReport) -> None:
    """Move the run through its phases; each phase is skipped when a previous attempt finished it."""
    if state.status == STAGING:
        _timed(report, "select", lambda: _stage(spark, tables, state, config))
        state.save(status=STAGED)
    if state.status == STAGED:
        if state.pending_shards():  # nothing selected: no Ray, no model
            result = _timed(report, "pipeline", lambda: run_pipeline(state, config))
            log.info("pipeline finished %d item(s) in %.1fs", result.rows, result.wall_seconds)
        state.save(status=PROCESSED)
    _timed(report, "commit", lambda: commit(spark, tables, state, config, report))
    state.save(status=COMMITTED)
    report.status = "degraded" if report.status == "degraded" else "succeeded"
    report.finished_at = utcnow()
    record_run(spark, tables, state, report)


def _timed(report: RunReport, phase: str, fn):
    start = time.monotonic()
    try:
        return fn()
    finally:
        report.stage_seconds[f"phase_{phase}"] = round(time.monotonic() - start, 3)


def _stage(spark, tables: Tables, state: RunState, config: VlclipConfig) -> None:
    hashed = load_hashed(spark, config.catalog, config.model_version)
    counts = stage_work(spark, hashed, tables, state, config.job.shard_size, (detector_identity(config),
                        config.model_version, llm_identity(config)), config.images.retry_failed_after_hours)
    log.info("catalog: %d item(s) seen, %d invalid, %d selected (%s mode) in %d shard(s), %d skipped (image "
             "failed for good recently)", counts.items_seen, counts.items_invalid, counts.items_selected,
             state.manifest["mode"], counts.shards, counts.items_skipped)


def commit(spark, tables: Tables, state: RunState, config: VlclipConfig, report: RunReport) -> None:
    """Merge the staged results into the Delta tables; safe to repeat after a failed attempt.

    The run's counts are taken first and checked against job.thresholds: a breach with on_breach=fail
    writes the error rows and caches but not the embeddings, and raises RunThresholdError; with
    on_breach=degraded everything is written and the run is reported as degraded.
    """
    results = _read_outputs(spark, state)
    results = results.cache() if results is not None else None
    errors = _error_rows(spark, state, results, config.model_version)
    errors = errors.cache() if errors is not None else None
    error_counts = errors.groupBy("stage", S.ERROR_TYPE).count().collect() if errors is not None else []
    _fill_counts(report, state, error_counts)
    report.outcome_counts = outcome_counts(results, error_counts)
    breached = breaches(config.job.thresholds, report.items_seen, report.items_selected, report.outcome_counts)
    publish = not breached or config.job.thresholds.on_breach == "degraded"
    run_concurrently(_commit_writes(tables, state, config, results, errors, publish))
    for frame in (results, errors):
        if frame is not None:
            frame.unpersist()
    if breached:
        _breach(report, breached, publish)
    if config.job.removed_items == "delete":
        report.items_removed = remove_items(spark, tables, config)
    log.info("commit: %d embedded, %d failed, %d removed, %d skipped", report.items_embedded, report.items_failed,
             report.items_removed, report.items_skipped)


def _commit_writes(tables: Tables, state: RunState, config: VlclipConfig, results, errors,
                   publish: bool) -> List[Callable[[], None]]:
    """The run's independent table writes: embeddings (when published), caches, failed images, errors."""
    writes = []
    if results is not None:
        if publish:
            writes.append(functools.partial(merge_embeddings, tables, _embedding_rows(results, state),
                                            config.model_version,
                                            update_unchanged=state.manifest["mode"] == "backfill"))
        writes += _cache_writes(tables, results, config)
        writes.append(functools.partial(record_failures, tables, results, state.run_id))
    if errors is not None:
        writes.append(functools.partial(replace_run_errors, tables, errors, state.run_id))
    return writes


def _breach(report: RunReport, breached: List[str], published: bool) -> None:
    message = "thresholds breached (job.thresholds): " + "; ".join(breached)
    if not published:
        report.items_embedded = 0  # processed, but none merged
        raise RunThresholdError(message + ". The run's embeddings were not merged; error rows and caches were "
                                "written; its items are selected again by the next run")
    log.warning("%s: the run is degraded", message)
    report.status, report.message = "degraded", message


def remove_items(spark, tables: Tables, config: VlclipConfig) -> int:
    """Delete the version's embeddings of items in no catalog row, guarded by job.max_removed_fraction."""
    from pyspark.sql import functions as F

    ids = normalise(read_catalog(spark, config.catalog)).select(S.ITEM_ID)
    gone = removed_items(tables, ids, config.model_version).count()
    if not gone:
        return 0
    stored = tables.read("embeddings").where(F.col(S.MODEL_VERSION) == F.lit(config.model_version)).count()
    if gone > config.job.max_removed_fraction * stored:
        raise RunThresholdError(f"job.removed_items=delete would delete {gone} of {stored} embeddings of "
                                f"{config.model_version} (more than job.max_removed_fraction="
                                f"{config.job.max_removed_fraction}); nothing was deleted. Check the catalog, "
                                f"or raise job.max_removed_fraction")
    return delete_removed_items(tables, ids, config.model_version)


def _read_outputs(spark, state: RunState):
    if not state.shards():
        return None
    return spark.read.parquet(storage.spark_path(state.path("output")))


def _embedding_rows(results, state: RunState):
    from pyspark.sql import functions as F

    return (results.where(F.col(S.STATUS) == S.STATUS_OK)
            .select(S.ITEM_ID, F.lit(state.manifest["model_version"]).alias(S.MODEL_VERSION), S.CONTENT_HASH,
                    S.IMAGE_EMBEDDING, S.TEXT_EMBEDDING, S.EMBEDDING,
                    F.size(S.EMBEDDING).alias("embedding_dim"), S.ENRICHED_TEXT, S.ENRICHMENT_STATUS,
                    S.GROUNDING_BOX, S.GROUNDING_SCORE, S.GROUNDED, S.PRODUCT_TYPE,
                    F.lit(state.run_id).alias(S.RUN_ID), F.current_timestamp().alias(S.UPDATED_AT)))


def _error_rows(spark, state: RunState, results, model_version: str):
    """This run's error rows (invalid catalog rows + failed items), or None when there are none to read."""
    from pyspark.sql import functions as F

    def shape(df, stage_col):
        return df.select(S.ITEM_ID, F.lit(state.run_id).alias(S.RUN_ID), F.lit(model_version).alias(S.MODEL_VERSION),
                         stage_col.alias("stage"), S.ERROR_TYPE, F.col(S.ERROR_MESSAGE).alias("message"),
                         F.current_timestamp().alias("occurred_at"))

    parts = []
    if state.manifest.get("items_invalid"):
        parts.append(shape(spark.read.parquet(storage.spark_path(state.path("catalog_errors"))), F.lit("catalog")))
    if results is not None:
        parts.append(shape(results.where(F.col(S.STATUS) == S.STATUS_ERROR), F.col(S.ERROR_STAGE)))
    return functools.reduce(lambda a, b: a.unionByName(b), parts) if parts else None


def run_concurrently(writes: List[Callable[[], None]]) -> None:
    """Run independent table writes at once, then raise the first error, if any, once all have ended.

    Each write is its own Delta commit on its own table (rerun-safe on its own), and most of a small
    MERGE is driver-side latency (planning, reading the log, committing) that overlaps well.
    """
    if len(writes) <= 1:
        for write in writes:
            write()
        return
    with ThreadPoolExecutor(max_workers=len(writes), thread_name_prefix="vlclip-commit") as pool:
        futures = [pool.submit(write) for write in writes]
    failures = [f.exception() for f in futures if f.exception() is not None]
    for extra in failures[1:]:
        log.error("another commit write failed too: %s", extra)
    if failures:
        raise failures[0]


def _cache_writes(tables: Tables, results, config: VlclipConfig) -> List[Callable[[], None]]:
    """The inserts of this run's fresh model outputs into the grounding and enrichment caches."""
    from pyspark.sql import functions as F

    now = F.current_timestamp()
    grounding = (results.where((F.col(S.GROUNDING_SOURCE) == S.SOURCE_MODEL) & F.col(S.GROUNDED).isNotNull())
                 .select(S.IMAGE_URI, F.col(S.IMAGE_SHA).alias("image_sha"),
                         F.lit(detector_identity(config)).alias("detector_id"),
                         F.col(S.GROUNDING_PROMPT).alias("prompt"), F.col(S.GROUNDING_BOX).alias("box"),
                         F.col(S.GROUNDING_SCORE).alias("score"), S.GROUNDED,
                         F.col(S.GROUNDING_REASON).alias("reason"), now.alias("created_at"))
                 .dropDuplicates(["image_uri", "image_sha", "prompt"]))
    reusable = ~F.coalesce(F.col(S.ENRICHMENT_REASON), F.lit("")).startswith("llm_error")
    enrichment = (results.where((F.col(S.ENRICHMENT_SOURCE) == S.SOURCE_MODEL) & F.col(S.ENRICHED_TEXT).isNotNull()
                                & reusable)
                  .select(S.TEXT_HASH, S.ENRICHED_TEXT, F.col(S.ENRICHMENT_STATUS).alias("status"),
                          F.col(S.ENRICHMENT_REASON).alias("reason"), now.alias("created_at"))
                  .dropDuplicates([S.TEXT_HASH]))
    return [functools.partial(insert_new, tables, "grounding_cache", grounding,
                              ("image_uri", "image_sha", "detector_id", "prompt")),
            functools.partial(insert_new, tables, "enrichment_cache", enrichment, (S.TEXT_HASH,))]


def _fill_counts(report: RunReport, state: RunState, error_counts: list) -> None:
    totals = PipelineResult()
    for summary in state.done_summaries():
        totals.add(summary)
    manifest = state.manifest
    report.items_seen = int(manifest.get("items_seen", 0))
    report.items_selected = int(manifest.get("items_selected", 0))
    report.items_invalid = int(manifest.get("items_invalid", 0))
    report.items_skipped = int(manifest.get("items_skipped", 0))
    report.items_embedded = totals.ok
    report.items_failed = totals.errors + report.items_invalid
    report.detector_calls = totals.detector_items
    report.llm_calls = totals.llm_calls
    for name, seconds in totals.stage_seconds.items():
        report.stage_seconds[name] = round(seconds, 3)
        report.stage_items_per_s[name] = round(totals.rows / seconds, 2) if seconds > 0 else 0.0
    report.error_counts = {}
    for row in error_counts:
        report.error_counts[row[S.ERROR_TYPE]] = report.error_counts.get(row[S.ERROR_TYPE], 0) + int(row["count"])


def outcome_counts(results, error_counts: list) -> Dict[str, int]:
    """Items per outcome: embedded (and how: ungrounded image, fallback text) or failed per stage."""
    from pyspark.sql import functions as F

    counts: Dict[str, int] = {}
    if results is not None:
        ok = results.where(F.col(S.STATUS) == S.STATUS_OK)
        row = ok.agg(F.count(F.lit(1)).alias("embedded"),
                     F.sum(F.when(~F.col(S.GROUNDED), 1).otherwise(0)).alias("embedded_ungrounded"),
                     F.sum(F.when(F.col(S.ENRICHMENT_STATUS) == "fallback", 1).otherwise(0))
                     .alias("embedded_text_fallback")).first()
        counts.update({k: int(v or 0) for k, v in row.asDict().items()})
    for row in error_counts:
        key = f"failed_{row['stage']}"
        counts[key] = counts.get(key, 0) + int(row["count"])
    return counts


def _record_failure(spark, tables: Tables, state: RunState, report: RunReport, err: BaseException) -> None:
    report.status = "failed"
    report.finished_at = utcnow()
    report.message = f"{type(err).__name__}: {err}"[:2000]
    state.save(last_error=report.message, **({"status": FAILED} if isinstance(err, RunThresholdError) else {}))
    try:
        record_run(spark, tables, state, report)
    except Exception as write_err:  # noqa: BLE001 - the original failure is what the caller must see
        log.error("could not record the failed run in the runs table: %s", write_err)


def record_run(spark, tables: Tables, state: RunState, report: RunReport) -> None:
    """Write the run's row to `runs`. The manifest notes the attempt *before* the write, so a run
    whose earlier attempt may have written a row MERGEs (one row per run) and a fresh run appends."""
    may_exist = bool(state.manifest.get("runs_row_written"))
    if not may_exist:
        state.save(runs_row_written=True)
    write_run(tables, runs_row(spark, report), may_exist)


def runs_row(spark, report: RunReport):
    schema = table_schema(spark, "runs")
    return literal_row(spark, schema, {name: getattr(report, name) for name in schema.names})
