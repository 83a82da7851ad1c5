"""One run of the catalog-embedding job: stage the work set (Spark), run stages (Ray), commit (Delta)."""

from __future__ import annotations

import logging
import time

from vlclip_core import storage
from vlclip_core.config import ConfigError, VlclipConfig, run_identities
from vlclip_core.pipeline.runner import run_pipeline
from vlclip_core.run.commit import commit
from vlclip_core.run.preflight import check_models
from vlclip_core.run.report import RunReport, record_failure, record_run
from vlclip_core.run.state import (
    COMMITTED,
    FINAL,
    PROCESSED,
    STAGED,
    STAGING,
    RunState,
    create_run,
    find_unfinished,
    new_run_id,
    open_run,
    utcnow,
)
from vlclip_core.selection.catalog import load_hashed
from vlclip_core.selection.workset import write_work_set
from vlclip_core.warehouse.locks import run_lock
from vlclip_core.warehouse.spark_session import get_spark
from vlclip_core.warehouse.tables import Tables

log = logging.getLogger(__name__)


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
            record_failure(spark, tables, state, report, err)
            raise
    return report


def _check_job_config(config: VlclipConfig) -> None:
    if config.job.removed_items == "delete" and config.catalog.filter:
        raise ConfigError(
            "job.removed_items=delete cannot be combined with catalog.filter: items outside "
            "the filter would be deleted"
        )


def _open_state(config: VlclipConfig, staging: str) -> RunState:
    job = config.job
    if job.run_id:
        state = open_run(staging, job.run_id)
        if state and state.status in FINAL:
            raise ConfigError(
                f"run {job.run_id} is already {state.status}; start a new run without job.run_id"
            )
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
    return RunReport(
        run_id=state.run_id,
        mode=state.manifest["mode"],
        model_version=config.model_version,
        config_hash=config.config_hash,
        started_at=utcnow(),
        resumed=state.status != STAGING,
        tables={t: tables.ref(t) for t in ("embeddings", "embedding_errors", "runs")},
    )


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
        report.phase_seconds[phase] = round(time.monotonic() - start, 3)


def _stage(spark, tables: Tables, state: RunState, config: VlclipConfig) -> None:
    hashed = load_hashed(spark, config.catalog, config.model_version)
    counts = write_work_set(
        spark,
        hashed,
        tables,
        state,
        config.job.shard_size,
        run_identities(config),
        config.images.retry_failed_after_hours,
    )
    log.info(
        "catalog: %d item(s) seen, %d invalid, %d selected (%s mode) in %d shard(s), %d skipped (image "
        "failed for good recently)",
        counts.items_seen,
        counts.items_invalid,
        counts.items_selected,
        state.manifest["mode"],
        counts.shards,
        counts.items_skipped,
    )
