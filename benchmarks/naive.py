"""The naive baseline: the same stages inside one Spark mapInPandas job, models cached per Python worker."""

from __future__ import annotations

import functools
import time
from typing import Dict, Iterator

import numpy as np
import pandas as pd

from benchmarks.bare import CACHE_COLUMNS, STAGE_ORDER, build_stages, chain
from vlclip_core import schema as S
from vlclip_core.batch import Batch, object_values
from vlclip_core.config import VlclipConfig

STAGE_COLUMNS = tuple(S.STAGE_SECONDS_PREFIX + name for name in STAGE_ORDER)
OUTPUT_SCHEMA = ", ".join(
    ["item_id string, status string, embedding array<float>, done_at double, llm_calls long"]
    + [f"{c} double" for c in STAGE_COLUMNS]
)
INPUT_COLUMNS = (S.ITEM_ID, S.TITLE, S.DESCRIPTION, S.PRODUCT_TYPE, S.ATTRIBUTES_JSON, S.IMAGE_URI)

# One entry per Spark Python worker process: the stages (and models) of the current run.
_WORKER_STAGES: Dict[str, Dict[str, object]] = {}


def worker_stages(config: VlclipConfig, run_key: str) -> Dict[str, object]:
    """The stages of `run_key`, built once per worker; a new run key drops the previous run's models."""
    if run_key not in _WORKER_STAGES:
        import torch

        _WORKER_STAGES.clear()
        torch.set_num_threads(1)
        _WORKER_STAGES[run_key] = build_stages(config)
    return _WORKER_STAGES[run_key]


def frame_batch(frame: pd.DataFrame) -> Batch:
    """A pandas frame of catalog columns as a work batch (None for nulls, empty cache columns)."""
    n = len(frame)
    batch = {
        c: object_values(
            None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in frame[c].tolist()
        )
        for c in INPUT_COLUMNS
    }
    for name in CACHE_COLUMNS:
        batch[name] = object_values([None] * n)
    batch[S.CACHED_SCORE] = np.full(n, np.nan, dtype=np.float32)
    return batch


def result_frame(batch: Batch) -> pd.DataFrame:
    vectors = batch[S.EMBEDDING]
    embeddings = [None if np.isnan(v).any() else v for v in vectors]
    return pd.DataFrame(
        {
            S.ITEM_ID: batch[S.ITEM_ID],
            S.STATUS: batch[S.STATUS],
            S.EMBEDDING: embeddings,
            "done_at": time.time(),
            S.LLM_CALLS: np.asarray(batch[S.LLM_CALLS], dtype=np.int64),
            **{c: np.asarray(batch[c], dtype=np.float64) for c in STAGE_COLUMNS},
        }
    )


def embed_frames(
    frames: Iterator[pd.DataFrame], config: VlclipConfig, run_key: str
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: every frame through decode -> grounding -> enrichment -> clip."""
    stages = worker_stages(config, run_key)
    for batch in chain((frame_batch(f) for f in frames), stages, config):
        yield result_frame(batch)


def run_naive(
    spark, catalog_dir: str, config: VlclipConfig, out_path: str, partitions: int, run_key: str
) -> dict:
    """Read the catalog, embed it in mapInPandas, write Delta; returns wall seconds, per-batch marks, the
    LLM requests made and each stage's busy seconds (summed over the workers, as vlclip's stage_seconds)."""
    from pyspark.sql import functions as F

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.stages.decode.batch_size))
    start = time.time()
    frame = (
        spark.read.parquet(catalog_dir)
        .select(
            S.ITEM_ID,
            S.TITLE,
            S.DESCRIPTION,
            S.PRODUCT_TYPE,
            F.to_json(S.ATTRIBUTES).alias(S.ATTRIBUTES_JSON),
            S.IMAGE_URI,
        )
        .repartition(partitions)
    )
    body = functools.partial(embed_frames, config=config, run_key=run_key)
    frame.mapInPandas(body, schema=OUTPUT_SCHEMA).write.format("delta").mode("overwrite").save(out_path)
    total = time.time() - start
    spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    written = spark.read.format("delta").load(out_path)
    marks = sorted((r["done_at"] - start, r["count"]) for r in written.groupBy("done_at").count().collect())
    ok = written.where(F.col(S.STATUS) == S.STATUS_OK).count()
    sums = written.agg(F.sum(S.LLM_CALLS).alias(S.LLM_CALLS), *(F.sum(c).alias(c) for c in STAGE_COLUMNS))
    sums = sums.collect()[0]
    return {
        "total_s": total,
        "marks": marks,
        "ok": ok,
        "rows": sum(c for _, c in marks),
        "llm_calls": int(sums[S.LLM_CALLS] or 0),
        "stage_seconds": {
            name: round(float(sums[c] or 0.0), 3) for name, c in zip(STAGE_ORDER, STAGE_COLUMNS)
        },
    }
