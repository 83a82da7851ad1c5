"""The commit: staged results into Delta (embeddings MERGE, caches, error rows, failed images), thresholds."""

from __future__ import annotations

import functools
import logging
from typing import Callable, Dict, List

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import VlclipConfig, detector_identity
from vlclip_core.pipeline.runner import PipelineResult
from vlclip_core.run.report import RunReport
from vlclip_core.run.state import RunState
from vlclip_core.run.groups import COMMITTED, GroupCommitter, cumulative_breaches, totals
from vlclip_core.run.thresholds import RunThresholdError
from vlclip_core.selection.catalog import normalise, read_catalog
from vlclip_core.selection.failed_images import record_failures
from vlclip_core.warehouse.tables import (
    Tables,
    append_errors,
    delete_removed_items,
    insert_new,
    merge_embeddings,
    removed_items,
    run_concurrently,
)
from vlclip_core.warehouse.spark_session import idempotent_session

log = logging.getLogger(__name__)


def commit(
    spark, tables: Tables, state: RunState, config: VlclipConfig, report: RunReport, lock=None
) -> None:
    """The commit phase: the groups the run did not commit while its pipeline ran (all of its shards
    when it never cut one), then the removed items; safe to repeat after a failed attempt.

    Each group's counts are checked against job.thresholds together with the groups before it: a
    breach with on_breach=fail writes that group's error rows and caches but not its embeddings, and
    raises RunThresholdError; with on_breach=degraded everything is written and the run is degraded.
    """
    committer = GroupCommitter(spark, tables, state, config, report, lock)
    try:
        committer.finish()
    finally:
        committer.close()
        fill_counts(report, state)
    breached = totals(state)["breached"]
    if breached:
        report.status = "degraded"
        report.message = "thresholds breached (job.thresholds): " + "; ".join(breached)
        log.warning("%s: the run is degraded", report.message)
    if config.job.removed_items == "delete":
        if lock is not None:
            lock.ensure_held()
        report.items_removed = remove_items(spark, tables, config, state.manifest.get("catalog_version"))
    log.info(
        "commit: %d embedded, %d failed, %d removed, %d skipped",
        report.items_embedded,
        report.items_failed,
        report.items_removed,
        report.items_skipped,
    )


def commit_group(spark, tables: Tables, state: RunState, config: VlclipConfig, group: Dict, lock) -> None:
    """Merge one group's staged results: embeddings (unless a threshold breach holds them back), caches,
    failed images and error rows, each a Delta commit tagged (run id, group number), so a repeat of a
    group skips every table it already reached. Its counts and outcome go into the manifest (`lock`
    guards the manifest against the thread cutting the next group)."""
    session = idempotent_session(
        spark, state.run_id, group["group"], f"vlclip run {state.run_id} group {group['group']}"
    )
    gtables = Tables(session, config.warehouse)
    # Not cached: each reader but the embeddings MERGE needs a few small columns, which Parquet reads
    # alone; caching would first copy every row's three vectors into Spark's memory.
    results = _read_outputs(session, state, group["shards"])
    errors = _error_rows(session, state, results, config.model_version, with_catalog=group["group"] == 0)
    errors = errors.cache() if errors is not None else None
    error_counts = errors.groupBy("stage", S.ERROR_TYPE).count().collect() if errors is not None else []
    expected = state.shards()
    with lock:
        group["rows"] = sum(expected[s] for s in group["shards"])
        group["outcomes"] = outcome_counts(results, error_counts)
        group["errors"] = _by_type(error_counts)
    breached = cumulative_breaches(state, config, group, group["final"])
    publish = not breached or config.job.thresholds.on_breach == "degraded"
    try:
        run_concurrently(_commit_writes(gtables, state, config, results, errors, publish))
    finally:
        if errors is not None:
            errors.unpersist()
    with lock:
        group.update(status=COMMITTED, published=publish, breached=breached)
        state.save()
    if breached and not publish:
        raise RunThresholdError(
            "thresholds breached (job.thresholds): " + "; ".join(breached) + f". Commit group "
            f"{group['group']}'s embeddings were not merged (earlier groups' were); its error rows and "
            f"caches were written; its items are selected again by the next run"
        )


def _by_type(error_counts: list) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for row in error_counts:
        counts[row[S.ERROR_TYPE]] = counts.get(row[S.ERROR_TYPE], 0) + int(row["count"])
    return counts


def _commit_writes(
    tables: Tables, state: RunState, config: VlclipConfig, results, errors, publish: bool
) -> List[Callable[[], None]]:
    """A group's independent table writes: embeddings (when published), caches, failed images, errors."""
    writes = []
    if results is not None:
        if publish:
            writes.append(
                functools.partial(
                    merge_embeddings,
                    tables,
                    _embedding_rows(results, state),
                    config.model_version,
                    update_unchanged=state.manifest["mode"] == "backfill",
                )
            )
        writes += _cache_writes(tables, results, config)
        writes.append(
            functools.partial(
                record_failures, tables, results, state.run_id, config.job.failed_images_retention_days
            )
        )
    if errors is not None:
        writes.append(functools.partial(append_errors, tables, errors))
    return writes


def remove_items(spark, tables: Tables, config: VlclipConfig, catalog_version=None) -> int:
    """Delete the version's embeddings of items in no catalog row, guarded by job.max_removed_fraction.

    The guard's count and the delete read the catalog snapshot the run staged from (`catalog_version`,
    a Delta version), so a catalog rewritten meanwhile cannot change what is deleted.
    """
    from pyspark.sql import functions as F

    ids = normalise(read_catalog(spark, config.catalog, catalog_version)).select(S.ITEM_ID)
    gone = removed_items(tables, ids, config.model_version).count()
    if not gone:
        return 0
    stored = tables.read("embeddings").where(F.col(S.MODEL_VERSION) == F.lit(config.model_version)).count()
    if gone > config.job.max_removed_fraction * stored:
        raise RunThresholdError(
            f"job.removed_items=delete would delete {gone} of {stored} embeddings of "
            f"{config.model_version} (more than job.max_removed_fraction="
            f"{config.job.max_removed_fraction}); nothing was deleted. Check the catalog, "
            f"or raise job.max_removed_fraction"
        )
    return delete_removed_items(tables, ids, config.model_version)


def _read_outputs(spark, state: RunState, shards: List[int]):
    """The staged results of these shards (shard_id read back from the directory names)."""
    if not shards:
        return None
    root = storage.spark_path(state.path("output"))
    paths = [storage.spark_path(state.shard_output(s)) for s in shards]
    return spark.read.option("basePath", root).parquet(*paths)


def _embedding_rows(results, state: RunState):
    from pyspark.sql import functions as F

    return results.where(F.col(S.STATUS) == S.STATUS_OK).select(
        S.ITEM_ID,
        F.lit(state.manifest["model_version"]).alias(S.MODEL_VERSION),
        S.CONTENT_HASH,
        S.IMAGE_EMBEDDING,
        S.TEXT_EMBEDDING,
        S.EMBEDDING,
        F.size(S.EMBEDDING).alias("embedding_dim"),
        S.ENRICHED_TEXT,
        S.ENRICHMENT_STATUS,
        S.GROUNDING_BOX,
        S.GROUNDING_SCORE,
        S.GROUNDED,
        S.PRODUCT_TYPE,
        llm_failed().alias(S.NEEDS_RERUN),
        F.lit(state.run_id).alias(S.RUN_ID),
        F.current_timestamp().alias(S.UPDATED_AT),
        F.lit(state.started_at).alias(S.RUN_STARTED_AT),
    )


def llm_failed():
    """Rows whose text fell back because the LLM failed (reason `llm_error: ...`): never cached, and
    merged with needs_rerun so that the next run selects them again."""
    from pyspark.sql import functions as F

    return F.coalesce(F.col(S.ENRICHMENT_REASON), F.lit("")).startswith("llm_error")


def _error_rows(spark, state: RunState, results, model_version: str, with_catalog: bool):
    """A group's error rows (its failed items, and the invalid catalog rows in the run's first group),
    or None when there are none."""
    from pyspark.sql import functions as F

    def shape(df, stage_col):
        return df.select(
            S.ITEM_ID,
            F.lit(state.run_id).alias(S.RUN_ID),
            F.lit(model_version).alias(S.MODEL_VERSION),
            stage_col.alias("stage"),
            S.ERROR_TYPE,
            F.col(S.ERROR_MESSAGE).alias("message"),
            F.current_timestamp().alias("occurred_at"),
        )

    parts = []
    if with_catalog and state.manifest.get("items_invalid"):
        parts.append(
            shape(spark.read.parquet(storage.spark_path(state.path("catalog_errors"))), F.lit("catalog"))
        )
    if results is not None:
        parts.append(shape(results.where(F.col(S.STATUS) == S.STATUS_ERROR), F.col(S.ERROR_STAGE)))
    return functools.reduce(lambda a, b: a.unionByName(b), parts) if parts else None


def _cache_writes(tables: Tables, results, config: VlclipConfig) -> List[Callable[[], None]]:
    """The inserts of this run's fresh model outputs into the grounding and enrichment caches."""
    from pyspark.sql import functions as F

    now = F.current_timestamp()
    grounding = (
        results.where((F.col(S.GROUNDING_SOURCE) == S.SOURCE_MODEL) & F.col(S.GROUNDED).isNotNull())
        .select(
            S.IMAGE_URI,
            F.col(S.IMAGE_SHA).alias("image_sha"),
            F.lit(detector_identity(config)).alias("detector_id"),
            F.col(S.GROUNDING_PROMPT).alias("prompt"),
            F.col(S.GROUNDING_BOX).alias("box"),
            F.col(S.GROUNDING_SCORE).alias("score"),
            S.GROUNDED,
            F.col(S.GROUNDING_REASON).alias("reason"),
            now.alias("created_at"),
        )
        .dropDuplicates(["image_uri", "image_sha", "prompt"])
    )
    reusable = ~llm_failed()
    enrichment = (
        results.where(
            (F.col(S.ENRICHMENT_SOURCE) == S.SOURCE_MODEL) & F.col(S.ENRICHED_TEXT).isNotNull() & reusable
        )
        .select(
            S.TEXT_HASH,
            S.ENRICHED_TEXT,
            F.col(S.ENRICHMENT_STATUS).alias("status"),
            F.col(S.ENRICHMENT_REASON).alias("reason"),
            now.alias("created_at"),
        )
        .dropDuplicates([S.TEXT_HASH])
    )
    return [
        functools.partial(
            insert_new,
            tables,
            "grounding_cache",
            grounding,
            ("image_uri", "image_sha", "detector_id", "prompt"),
        ),
        functools.partial(insert_new, tables, "enrichment_cache", enrichment, (S.TEXT_HASH,)),
    ]


def fill_counts(report: RunReport, state: RunState) -> None:
    """The report's counts: staging's from the manifest, outcomes and errors summed over the committed
    groups, busy seconds and model calls from the shards' done-markers."""
    manifest = state.manifest
    report.items_seen = int(manifest.get("items_seen", 0))
    report.items_selected = int(manifest.get("items_selected", 0))
    report.items_invalid = int(manifest.get("items_invalid", 0))
    report.items_skipped = int(manifest.get("items_skipped", 0))
    done = totals(state)
    report.items_embedded = done["embedded"]
    report.items_failed = sum(done["errors"].values())
    report.error_counts = dict(done["errors"])
    report.outcome_counts = dict(done["outcomes"])
    if report.items_skipped:
        report.outcome_counts["skipped_failed_image"] = report.items_skipped
    summed = PipelineResult()
    for summary in state.done_summaries():
        summed.add(summary)
    report.detector_calls = summed.detector_items
    report.llm_calls = summed.llm_calls
    for name, seconds in summed.stage_seconds.items():
        report.stage_seconds[name] = round(seconds, 3)
        report.stage_items_per_s[name] = round(summed.rows / seconds, 2) if seconds > 0 else 0.0


def outcome_counts(results, error_counts: list) -> Dict[str, int]:
    """Items per outcome: embedded (and how: ungrounded image, fallback text) or failed per stage."""
    from pyspark.sql import functions as F

    counts: Dict[str, int] = {}
    if results is not None:
        ok = results.where(F.col(S.STATUS) == S.STATUS_OK)
        row = ok.agg(
            F.count(F.lit(1)).alias("embedded"),
            F.sum(F.when(~F.col(S.GROUNDED), 1).otherwise(0)).alias("embedded_ungrounded"),
            F.sum(F.when(F.col(S.ENRICHMENT_STATUS) == "fallback", 1).otherwise(0)).alias(
                "embedded_text_fallback"
            ),
            F.sum(F.when(llm_failed(), 1).otherwise(0)).alias("embedded_llm_error"),
        ).first()
        counts.update({k: int(v or 0) for k, v in row.asDict().items()})
    for row in error_counts:
        key = f"failed_{row['stage']}"
        counts[key] = counts.get(key, 0) + int(row["count"])
    return counts
