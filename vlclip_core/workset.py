"""Decide the work set with Spark (incremental or backfill), join the stage caches, stage it as Parquet shards."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, Tuple

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.catalog import CONTENT_HASH_PREFIX, LEGACY_CONTENT_HASH, with_hashes
from vlclip_core.runs import RunState
from vlclip_core.tables import Tables

log = logging.getLogger(__name__)


@dataclass
class StagedCounts:
    items_seen: int
    items_invalid: int
    items_selected: int
    shards: int


# Every catalog row gets one class in the selection plan, so one Spark action counts them all.
CLASS = "_class"
INVALID, SELECTED, CURRENT = "invalid", "selected", "current"
CURRENT_HASH = "_current_hash"


def classify(flagged, tables: Tables, mode: str, model_version: str, llm_identity: str):
    """The flagged catalog with hashes and a `_class` column: invalid, selected (to embed) or current.

    Incremental selects items whose (item_id, model_version) is missing or whose content hash changed;
    backfill selects every valid item. The embeddings side is joined on item_id alone, so the join
    shares the shuffle of the duplicate-id window (one exchange of the catalog, not two).
    """
    from pyspark.sql import functions as F

    if mode == "backfill":
        df = with_hashes(flagged, model_version, llm_identity)
        selected = F.lit(True)
    else:
        df = with_hashes(flagged, model_version, llm_identity, legacy=True)
        # max(): at most one row per item even if the table was written with duplicates outside vlclip
        current = (tables.read("embeddings").where(F.col(S.MODEL_VERSION) == model_version)
                   .groupBy(S.ITEM_ID).agg(F.max(S.CONTENT_HASH).alias(CURRENT_HASH)))
        df = df.join(current, S.ITEM_ID, "left")
        stored = F.col(CURRENT_HASH)
        # a row stored by the first release holds its SHA-256 scheme: compared with that (computed only
        # for such rows), it stays current, and the work set writes it back under the current scheme.
        unchanged = (F.when(stored.startswith(CONTENT_HASH_PREFIX), stored == F.col(S.CONTENT_HASH))
                     .otherwise(stored == F.col(LEGACY_CONTENT_HASH)))
        selected = stored.isNull() | ~unchanged
    cls = F.when(F.col(S.ERROR_TYPE).isNotNull(), F.lit(INVALID)).when(selected, F.lit(SELECTED)).otherwise(F.lit(CURRENT))
    return df.withColumn(CLASS, cls)


def join_caches(work, tables: Tables, detector_id: str):
    """Attach cache candidates: the latest grounding of each image_uri, the enrichment of each text_hash."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    latest = Window.partitionBy("image_uri").orderBy(F.col("created_at").desc())
    grounding = (tables.read("grounding_cache").where(F.col("detector_id") == detector_id)
                 .withColumn("_rank", F.row_number().over(latest)).where("_rank = 1")
                 .select(F.col("image_uri").alias(S.IMAGE_URI), F.col("image_sha").alias(S.CACHED_IMAGE_SHA),
                         F.col("prompt").alias(S.CACHED_PROMPT), F.col("box").alias(S.CACHED_BOX),
                         F.col("score").alias(S.CACHED_SCORE), F.col("grounded").alias(S.CACHED_GROUNDED),
                         F.col("reason").alias(S.CACHED_GROUNDING_REASON)))
    enrichment = (tables.read("enrichment_cache")
                  .select(F.col("text_hash").alias(S.TEXT_HASH), F.col("enriched_text").alias(S.CACHED_TEXT),
                          F.col("status").alias(S.CACHED_ENRICHMENT_STATUS),
                          F.col("reason").alias(S.CACHED_ENRICHMENT_REASON))
                  .dropDuplicates([S.TEXT_HASH]))
    return work.join(grounding, S.IMAGE_URI, "left").join(enrichment, S.TEXT_HASH, "left")


def assign_shards(work, n_items: int, shard_size: int):
    """Deterministic shard ids: a hash of item_id modulo ceil(n / shard_size)."""
    from pyspark.sql import functions as F

    n_shards = max(1, math.ceil(n_items / shard_size))
    return work.withColumn(S.SHARD_ID, F.pmod(F.xxhash64(S.ITEM_ID), F.lit(n_shards)).cast("int")), n_shards


def stage_work(spark, flagged, tables: Tables, state: RunState, shard_size: int, detector_id: str,
               hashes: Tuple[str, str]) -> StagedCounts:
    """Write the work set and the invalid catalog rows under the run directory; record shard sizes.

    One Spark action counts the rows of each class; the work set and the invalid rows are written
    (each a second pass over the catalog) only when there are some, so a run that selects nothing
    makes one pass and writes nothing but its manifest. The recorded counts are those of the files
    written, so they agree with what the later phases read even if the catalog changed meanwhile.
    """
    from pyspark.sql import functions as F

    classified = classify(flagged, tables, state.manifest["mode"], *hashes)
    counts = {r[CLASS]: int(r["count"]) for r in classified.groupBy(CLASS).count().collect()}
    shard_rows = _write_work(spark, classified.where(F.col(CLASS) == SELECTED), tables, state,
                             counts.get(SELECTED, 0), shard_size, detector_id)
    n_selected = sum(shard_rows.values())
    n_invalid = _write_invalid(spark, classified.where(F.col(CLASS) == INVALID), state, counts.get(INVALID, 0))
    if (n_selected, n_invalid) != (counts.get(SELECTED, 0), counts.get(INVALID, 0)):
        log.warning("the catalog changed while it was staged: counted %d selected / %d invalid, staged %d / %d",
                    counts.get(SELECTED, 0), counts.get(INVALID, 0), n_selected, n_invalid)
    staged = StagedCounts(sum(counts.values()), n_invalid, n_selected, len(shard_rows))
    state.save(shards={str(k): v for k, v in shard_rows.items()}, items_seen=staged.items_seen,
               items_invalid=staged.items_invalid, items_selected=staged.items_selected)
    return staged


def _write_invalid(spark, invalid, state: RunState, n_counted: int) -> int:
    if not n_counted:
        return 0
    path = storage.spark_path(state.path("catalog_errors"))
    invalid.select(S.ITEM_ID, S.IMAGE_URI, S.ERROR_TYPE, S.ERROR_MESSAGE).write.mode("overwrite").parquet(path)
    return spark.read.parquet(path).count()


def _write_work(spark, work, tables: Tables, state: RunState, n_selected: int, shard_size: int,
                detector_id: str) -> Dict[int, int]:
    if not n_selected:
        return {}
    work, n_shards = assign_shards(join_caches(work, tables, detector_id), n_selected, shard_size)
    (work.select(*S.WORK_COLUMNS).repartition(n_shards, S.SHARD_ID)
     .write.mode("overwrite").partitionBy(S.SHARD_ID).parquet(storage.spark_path(state.path("input"))))
    rows = spark.read.parquet(storage.spark_path(state.path("input"))).groupBy(S.SHARD_ID).count().collect()
    return {int(r[S.SHARD_ID]): int(r["count"]) for r in rows}
