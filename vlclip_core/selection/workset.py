"""Decide the work set with Spark (incremental or backfill), join the stage caches, write Parquet shards."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Dict

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import RunIdentities
from vlclip_core.run.state import RunState
from vlclip_core.selection.catalog import flag_invalid, with_text_hashes
from vlclip_core.selection.failed_images import split_known_failures
from vlclip_core.warehouse.tables import Tables

log = logging.getLogger(__name__)


@dataclass
class StagedCounts:
    items_seen: int
    items_invalid: int
    items_selected: int
    shards: int
    items_skipped: int = 0  # selected, but their image failed for good recently: not staged


# Every catalog row gets one class in the selection plan, so one Spark action counts them all.
CLASS = "_class"
INVALID, SELECTED, CURRENT = "invalid", "selected", "current"
CURRENT_HASH = "_current_hash"
FROM_CATALOG, STORED_HASH, DUPS = "_from_catalog", "_stored_hash", "_catalog_rows"


def classify(hashed, tables: Tables, mode: str, model_version: str):
    """A load_hashed() catalog, flagged, with a `_class` column: invalid, selected (to embed) or current.

    Incremental selects items whose (item_id, model_version) is missing, whose content hash changed or
    whose stored row needs a rerun (its text fell back because the LLM failed);
    backfill selects every valid item. Incremental puts the catalog and the stored (item_id, hash) rows
    of the version in one union partitioned by item_id: one window over it counts the catalog's rows of
    each id (the duplicate check) and finds the stored hash, so the plan has one exchange and one sort
    (a join would shuffle and sort each side, and aggregate the stored side to one row per id).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if mode == "backfill":
        df = flag_invalid(hashed)
        selected = F.lit(True)
    else:
        stored = (
            tables.read("embeddings")
            .where(F.col(S.MODEL_VERSION) == model_version)
            .select(S.ITEM_ID, _current_hash().alias(STORED_HASH), F.lit(False).alias(FROM_CATALOG))
        )
        both = hashed.withColumn(FROM_CATALOG, F.lit(True)).unionByName(stored, allowMissingColumns=True)
        by_id = Window.partitionBy(S.ITEM_ID)
        # max(): one stored hash per item even if the table was written with duplicates outside vlclip
        both = both.select(
            *hashed.columns,
            F.max(STORED_HASH).over(by_id).alias(CURRENT_HASH),
            F.count(F.when(F.col(FROM_CATALOG), 1)).over(by_id).alias(DUPS),
            FROM_CATALOG,
        )
        df = flag_invalid(both.where(F.col(FROM_CATALOG)), F.col(DUPS))
        stored = F.col(CURRENT_HASH)
        selected = stored.isNull() | (stored != F.col(S.CONTENT_HASH))
    cls = (
        F.when(F.col(S.ERROR_TYPE).isNotNull(), F.lit(INVALID))
        .when(selected, F.lit(SELECTED))
        .otherwise(F.lit(CURRENT))
    )
    return df.withColumn(CLASS, cls).drop(FROM_CATALOG, DUPS)


def _current_hash():
    """The stored content hash, or null for a row that needs a rerun (its text fell back because the
    LLM failed): such an item is selected again as if it had never been embedded."""
    from pyspark.sql import functions as F

    rerun = F.coalesce(F.col(S.NEEDS_RERUN), F.lit(False))
    return F.when(rerun, F.lit(None)).otherwise(F.col(S.CONTENT_HASH))


def join_caches(work, tables: Tables, detector_id: str):
    """Attach cache candidates: the latest grounding of each image_uri, the enrichment of each text_hash."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    latest = Window.partitionBy("image_uri").orderBy(F.col("created_at").desc())
    grounding = (
        tables.read("grounding_cache")
        .where(F.col("detector_id") == detector_id)
        .withColumn("_rank", F.row_number().over(latest))
        .where("_rank = 1")
        .select(
            F.col("image_uri").alias(S.IMAGE_URI),
            F.col("image_sha").alias(S.CACHED_IMAGE_SHA),
            F.col("prompt").alias(S.CACHED_PROMPT),
            F.col("box").alias(S.CACHED_BOX),
            F.col("score").alias(S.CACHED_SCORE),
            F.col("grounded").alias(S.CACHED_GROUNDED),
            F.col("reason").alias(S.CACHED_GROUNDING_REASON),
        )
    )
    enrichment = (
        tables.read("enrichment_cache")
        .select(
            F.col("text_hash").alias(S.TEXT_HASH),
            F.col("enriched_text").alias(S.CACHED_TEXT),
            F.col("status").alias(S.CACHED_ENRICHMENT_STATUS),
            F.col("reason").alias(S.CACHED_ENRICHMENT_REASON),
        )
        .dropDuplicates([S.TEXT_HASH])
    )
    return work.join(grounding, S.IMAGE_URI, "left").join(enrichment, S.TEXT_HASH, "left")


def assign_shards(work, n_items: int, shard_size: int):
    """Deterministic shard ids: a hash of item_id modulo ceil(n / shard_size)."""
    from pyspark.sql import functions as F

    n_shards = max(1, math.ceil(n_items / shard_size))
    return work.withColumn(S.SHARD_ID, F.pmod(F.xxhash64(S.ITEM_ID), F.lit(n_shards)).cast("int")), n_shards


def write_work_set(
    spark,
    hashed,
    tables: Tables,
    state: RunState,
    shard_size: int,
    identities: RunIdentities,
    retry_failed_after_hours: float,
    on_counted: Callable[[int], None] = lambda selected: None,
) -> StagedCounts:
    """Write the work set and the invalid catalog rows under the run directory; record shard sizes.

    `identities` key the selection (model_version) and the cache joins (detector, LLM). One Spark
    action counts the rows of each class; the work set and the invalid rows are written (each a
    second pass over the catalog) only when there are some, so a run that selects nothing makes one
    pass and writes nothing but its manifest. Selected items whose image failed for good within
    `retry_failed_after_hours` are skipped (counted). `on_counted` gets the number of selected rows as
    soon as they are counted, before anything is written. The recorded counts are those of the files
    written, so they agree with what the later phases read even if the catalog changed meanwhile.
    """
    from pyspark.sql import functions as F

    classified = classify(hashed, tables, state.manifest["mode"], identities.model_version)
    counts = _count_classes(classified)
    on_counted(counts.get(SELECTED, 0))
    work, skipped = classified.where(F.col(CLASS) == SELECTED), 0
    if counts.get(SELECTED):
        work, known = split_known_failures(work, tables, retry_failed_after_hours)
        skipped = known.count() if known is not None else 0
    shard_rows = _write_work(
        spark, work, tables, state, counts.get(SELECTED, 0) - skipped, shard_size, identities
    )
    n_selected = sum(shard_rows.values())
    n_invalid = _write_invalid(
        spark, classified.where(F.col(CLASS) == INVALID), state, counts.get(INVALID, 0)
    )
    if (n_selected + skipped, n_invalid) != (counts.get(SELECTED, 0), counts.get(INVALID, 0)):
        log.warning(
            "the catalog changed while it was staged: counted %d selected / %d invalid, staged %d (+%d "
            "skipped) / %d",
            counts.get(SELECTED, 0),
            counts.get(INVALID, 0),
            n_selected,
            skipped,
            n_invalid,
        )
    staged = StagedCounts(sum(counts.values()), n_invalid, n_selected, len(shard_rows), skipped)
    state.save(
        shards={str(k): v for k, v in shard_rows.items()},
        items_seen=staged.items_seen,
        items_invalid=staged.items_invalid,
        items_selected=staged.items_selected,
        items_skipped=skipped,
    )
    return staged


def _count_classes(classified) -> Dict[str, int]:
    return {r[CLASS]: int(r["count"]) for r in classified.groupBy(CLASS).count().collect()}


def _write_invalid(spark, invalid, state: RunState, n_counted: int) -> int:
    if not n_counted:
        return 0
    path = storage.spark_path(state.path("catalog_errors"))
    invalid.select(S.ITEM_ID, S.IMAGE_URI, S.ERROR_TYPE, S.ERROR_MESSAGE).write.mode("overwrite").parquet(
        path
    )
    return spark.read.parquet(path).count()


def _write_work(
    spark, work, tables: Tables, state: RunState, n_selected: int, shard_size: int, identities: RunIdentities
) -> Dict[int, int]:
    """Write the selected rows, text-hashed and joined with the caches, as shards."""
    if not n_selected:
        return {}
    work = join_caches(with_text_hashes(work, identities.llm), tables, identities.detector)
    work, n_shards = assign_shards(work, n_selected, shard_size)
    (
        work.select(*S.WORK_COLUMNS)
        .repartition(n_shards, S.SHARD_ID)
        .write.mode("overwrite")
        .partitionBy(S.SHARD_ID)
        .parquet(storage.spark_path(state.path("input")))
    )
    rows = spark.read.parquet(storage.spark_path(state.path("input"))).groupBy(S.SHARD_ID).count().collect()
    return {int(r[S.SHARD_ID]): int(r["count"]) for r in rows}
