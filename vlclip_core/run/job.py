"""One run of the catalog-embedding job: stage the work set (Spark), run stages (Ray), commit (Delta)."""

from __future__ import annotations

import logging
import threading
import time

from vlclip_core import storage
from vlclip_core.config import ConfigError, VlclipConfig, run_identities
from vlclip_core.pipeline.ray_init import init_ray
from vlclip_core.pipeline.runner import run_pipeline
from vlclip_core.run.commit import commit, fill_counts
from vlclip_core.run.groups import GroupCommitter
from vlclip_core.run.preflight import check_models
from vlclip_core.run.lifecycle import (
    RunSupersededError,
    abandon,
    complete_committed_runs,
    record_committed,
    save_committed,
    superseded_by,
)
from vlclip_core.run.report import RunReport, record_failure
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
from vlclip_core.selection.catalog import catalog_version, load_hashed
from vlclip_core.selection.workset import write_work_set
from vlclip_core.warehouse.locks import lock_root, run_lock, sigterm_as_exit
from vlclip_core.warehouse.spark_session import get_spark
from vlclip_core.warehouse.tables import Tables

log = logging.getLogger(__name__)


def run_job(config: VlclipConfig, spark=None) -> RunReport:
    """Run (or resume) one job run end to end and return its report; raises on failure after recording it."""
    _check_job_config(config)
    _check_resumed_recipe(config)
    check_models(config)
    spark = spark or get_spark(config.spark)
    tables = Tables(spark, config.warehouse)
    staging = config.warehouse.staging()
    storage.makedirs(staging)
    hint = config.job.run_id or config.job.mode
    lock = run_lock(
        spark, lock_root(config.warehouse), config.warehouse.run_lock, hint, config.warehouse.lock_lease_s
    )
    with sigterm_as_exit(), lock:
        tables.ensure_all()  # under the lock: no table is altered while another run writes
        complete_committed_runs(spark, tables, staging)
        state = _open_state(spark, config, staging, tables)
        report = _new_report(config, state, tables)
        try:
            _advance(spark, tables, state, config, report, lock)
        except BaseException as err:
            _record_failure(spark, tables, state, report, err)
            raise
    return report


def _record_failure(spark, tables: Tables, state: RunState, report: RunReport, err: BaseException) -> None:
    """A failure before the commit is the run's; after it, only the runs row is missing: the next run
    writes it from the manifest (complete_committed_runs), so the merged run is never recorded failed."""
    if state.status == COMMITTED:
        log.error(
            "run %s is committed but its runs row could not be written (%s: %s); the next run writes it",
            state.run_id,
            type(err).__name__,
            err,
        )
        return
    record_failure(spark, tables, state, report, err)


def _check_job_config(config: VlclipConfig) -> None:
    if config.job.removed_items == "delete" and config.catalog.filter:
        raise ConfigError(
            "job.removed_items=delete cannot be combined with catalog.filter: items outside "
            "the filter would be deleted"
        )


def _check_resumed_recipe(config: VlclipConfig) -> None:
    """A run resumed by id must run the recipe it was started with, else its rows would be tagged with
    one model_version and merged under another: fail before any work, naming both."""
    run_id = config.job.run_id
    state = open_run(config.warehouse.staging(), run_id) if run_id else None
    if state is None or state.manifest.get("model_version") == config.model_version:
        return
    raise ConfigError(
        f"run {run_id} was started with model_version {state.manifest.get('model_version')} (config hash "
        f"{state.manifest.get('config_hash')}), but this config gives model_version {config.model_version} "
        f"(config hash {config.config_hash}): a run cannot change its recipe. Resume it with the recipe "
        f"it started with, or start a new run without job.run_id (`vlclip abandon {run_id}` drops it)"
    )


def _open_state(spark, config: VlclipConfig, staging: str, tables: Tables) -> RunState:
    job = config.job
    if job.run_id:
        _check_resumed_recipe(config)  # again under the lock
        state = open_run(staging, job.run_id)
        if state and state.status not in FINAL and _abandon_if_superseded(spark, tables, state):
            raise RunSupersededError(
                f"run {job.run_id} was abandoned: {state.manifest['last_error']}; start a new run "
                f"without job.run_id"
            )
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
        if state and not _abandon_if_superseded(spark, tables, state):
            log.info("resuming unfinished run %s (status %s)", state.run_id, state.status)
            return state
    return create_run(staging, new_run_id(job.mode), job.mode, config.model_version, config.config_hash)


def _abandon_if_superseded(spark, tables: Tables, state: RunState) -> bool:
    """Abandon (never resume) a run older than the last committed run of its model_version: its staged
    outputs were computed from catalog content that a later run has already replaced."""
    later = superseded_by(tables, state)
    if later is None:
        return False
    abandon(
        spark,
        tables,
        state,
        f"superseded: started {state.started_at.isoformat()}, before the run started "
        f"{later.isoformat()} that committed model_version {state.manifest['model_version']}",
    )
    return True


def _new_report(config: VlclipConfig, state: RunState, tables: Tables) -> RunReport:
    return RunReport(
        run_id=state.run_id,
        mode=state.manifest["mode"],
        model_version=config.model_version,
        config_hash=config.config_hash,
        started_at=utcnow(),
        run_started_at=state.started_at,
        resumed=not state.created,
        tables={t: tables.ref(t) for t in ("embeddings", "embedding_errors", "runs")},
    )


def _advance(spark, tables: Tables, state: RunState, config: VlclipConfig, report: RunReport, lock) -> None:
    """Move the run through its phases; each phase is skipped when a previous attempt finished it."""
    if state.status == STAGING:
        _timed(report, "select", lambda: _stage_starting_ray(spark, tables, state, config))
        state.save(status=STAGED)
    if state.status == STAGED:
        if state.pending_shards():  # nothing selected: no Ray, no model
            result = _timed(report, "pipeline", lambda: _pipeline(spark, tables, state, config, report, lock))
            log.info("pipeline finished %d item(s) in %.1fs", result.rows, result.wall_seconds)
        state.save(status=PROCESSED)
    _timed(report, "commit", lambda: commit(spark, tables, state, config, report, lock))
    report.status = "degraded" if report.status == "degraded" else "succeeded"
    report.finished_at = utcnow()
    save_committed(state, report)
    record_committed(spark, tables, state, report)


def _pipeline(spark, tables: Tables, state: RunState, config: VlclipConfig, report: RunReport, lock):
    """Run the pipeline while a committer merges its finished shards in groups as they complete."""
    committer = GroupCommitter(spark, tables, state, config, report, lock)
    try:
        result = run_pipeline(state, config, on_shard_done=committer.shard_done)
        report.pipeline_stats = result.pool_stats
        committer.close(check=True)  # a breach found by the group in flight after the last shard
        return result
    except BaseException:
        committer.close()  # a group in flight ends its commit (idempotent) before the failure is recorded
        fill_counts(report, state)  # on success the commit phase fills them
        raise


def _timed(report: RunReport, phase: str, fn):
    start = time.monotonic()
    try:
        return fn()
    finally:
        report.phase_seconds[phase] = round(time.monotonic() - start, 3)


def _stage_starting_ray(spark, tables: Tables, state: RunState, config: VlclipConfig) -> None:
    """Stage the work set; with ray.start_during_staging, Spark stages in a worker thread while this
    (main) thread starts Ray as soon as the selection is counted and not empty."""
    if not config.ray.start_during_staging:
        return _stage(spark, tables, state, config)
    counted, outcome = threading.Event(), {}

    def selected(n: int) -> None:
        outcome["selected"] = n
        counted.set()

    def stage() -> None:
        try:
            _stage(spark, tables, state, config, on_counted=selected)
        except BaseException as err:  # noqa: BLE001 - raised again in the main thread
            outcome["error"] = err
        finally:
            counted.set()

    worker = threading.Thread(target=stage, name="vlclip-staging", daemon=True)
    worker.start()
    try:
        counted.wait()
        if outcome.get("selected") and "error" not in outcome:
            log.info("starting Ray while Spark writes the %d selected item(s)", outcome["selected"])
            init_ray(config.ray)
    except BaseException:
        spark.sparkContext.cancelAllJobs()  # the staging is redone by the next attempt
        worker.join(timeout=60)
        raise
    worker.join()
    if "error" in outcome:
        raise outcome["error"]


def _stage(spark, tables: Tables, state: RunState, config: VlclipConfig, on_counted=lambda n: None) -> None:
    if "catalog_version" not in state.manifest:  # pinned once: a resumed staging reads the same snapshot
        state.save(catalog_version=catalog_version(spark, config.catalog))
    hashed = load_hashed(spark, config.catalog, config.model_version, state.manifest["catalog_version"])
    counts = write_work_set(
        spark,
        hashed,
        tables,
        state,
        config.job.shard_size,
        run_identities(config),
        config.images.retry_failed_after_hours,
        on_counted,
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
