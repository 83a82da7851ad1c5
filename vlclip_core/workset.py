"""Decide the work set with Spark (incremental or backfill), join the stage caches, stage it as Parquet shards."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, Tuple

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.catalog import split_flagged
from vlclip_core.runs import RunState
from vlclip_core.tables import Tables

log = logging.getLogger(__name__)


@dataclass
class StagedCounts:
    items_seen: int
    items_invalid: int
    items_selected: int
    shards: int


def select_work(valid, tables: Tables, mode: str, model_version: str):
    """Incremental: items whose (item_id, model_version) is missing or whose content hash changed."""
    if mode == "backfill":
        return valid
    current = (tables.read("embeddings").where(f"model_version = '{model_version}'")
               .select(S.ITEM_ID, S.CONTENT_HASH))
    return valid.join(current, [S.ITEM_ID, S.CONTENT_HASH], "left_anti")


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

    `flagged` (see catalog.flag_invalid) is cached for the duration, so the catalog is read once; a
    run that selects nothing writes nothing but its manifest.
    """
    from pyspark import StorageLevel

    flagged = flagged.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        valid, invalid = split_flagged(flagged, *hashes)
        work = select_work(valid, tables, state.manifest["mode"], state.manifest["model_version"]).cache()
        n_selected = work.count()
        shard_rows = _write_work(spark, work, tables, state, n_selected, shard_size, detector_id)
        work.unpersist()
        n_invalid = invalid.count()
        if n_invalid:
            invalid.write.mode("overwrite").parquet(storage.spark_path(state.path("catalog_errors")))
        counts = StagedCounts(flagged.count(), n_invalid, n_selected, len(shard_rows))
    finally:
        flagged.unpersist()
    state.save(shards={str(k): v for k, v in shard_rows.items()}, items_seen=counts.items_seen,
               items_invalid=counts.items_invalid, items_selected=counts.items_selected)
    return counts


def _write_work(spark, work, tables: Tables, state: RunState, n_selected: int, shard_size: int,
                detector_id: str) -> Dict[int, int]:
    if not n_selected:
        return {}
    work, n_shards = assign_shards(join_caches(work, tables, detector_id), n_selected, shard_size)
    (work.select(*S.WORK_COLUMNS).repartition(n_shards, S.SHARD_ID)
     .write.mode("overwrite").partitionBy(S.SHARD_ID).parquet(storage.spark_path(state.path("input"))))
    rows = spark.read.parquet(storage.spark_path(state.path("input"))).groupBy(S.SHARD_ID).count().collect()
    return {int(r[S.SHARD_ID]): int(r["count"]) for r in rows}
