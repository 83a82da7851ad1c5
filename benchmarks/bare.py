"""The bare baseline: the project's own stage classes in one process, no Spark, no Ray.

Batches are cut as the Ray chain cuts them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional

import numpy as np
import pyarrow as pa

from vlclip_core import schema as S
from vlclip_core.batch import Batch, object_values
from vlclip_core.config import VlclipConfig

CACHE_COLUMNS = (
    S.CACHED_IMAGE_SHA,
    S.CACHED_PROMPT,
    S.CACHED_BOX,
    S.CACHED_SCORE,
    S.CACHED_GROUNDED,
    S.CACHED_GROUNDING_REASON,
    S.CACHED_TEXT,
    S.CACHED_ENRICHMENT_STATUS,
    S.CACHED_ENRICHMENT_REASON,
)
TEXT_COLUMNS = (S.ITEM_ID, S.TITLE, S.DESCRIPTION, S.PRODUCT_TYPE, S.IMAGE_URI)
STAGE_ORDER = ("decode", "grounding", "enrichment", "clip")


@dataclass
class LoopTiming:
    """Wall-clock marks of one bare-loop run (seconds from its start, model loading included)."""

    items: int = 0
    ok: int = 0
    load_s: float = 0.0
    total_s: float = 0.0
    first_batch_s: float = 0.0
    batch_marks: List[tuple] = field(default_factory=list)  # (seconds, rows) of each finished batch
    detector_calls: int = 0
    llm_calls: int = 0

    def steady_items_per_s(self) -> Optional[float]:
        return steady_rate(self.batch_marks)


MIN_STEADY_MARKS = 4


def steady_rate(marks: List[tuple]) -> Optional[float]:
    """Items/s after the first finished batch: rows of later batches / time from the first to the last.

    None with fewer than MIN_STEADY_MARKS finished batches: two batches of parallel workers that finish
    together would give a meaningless rate.
    """
    marks = sorted(marks)
    span = marks[-1][0] - marks[0][0] if marks else 0.0
    if len(marks) < MIN_STEADY_MARKS or span <= 0:
        return None
    return sum(rows for _, rows in marks[1:]) / span


def work_batch(table: pa.Table) -> Batch:
    """Catalog rows as the staged work set looks to the stages: attributes as sorted JSON, empty caches."""
    n = table.num_rows
    batch = {name: object_values(table.column(name).to_pylist()) for name in TEXT_COLUMNS}
    attrs = table.column(S.ATTRIBUTES).to_pylist()
    batch[S.ATTRIBUTES_JSON] = object_values(
        None if a is None else json.dumps(dict(sorted(a)), separators=(",", ":")) for a in attrs
    )
    for name in CACHE_COLUMNS:
        batch[name] = object_values([None] * n)
    batch[S.CACHED_SCORE] = np.full(n, np.nan, dtype=np.float32)
    return batch


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    return {k: v[start:stop] for k, v in batch.items()}


def concat_batches(parts: List[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def rebatch(batches: Iterable[Batch], size: int) -> Iterator[Batch]:
    """Re-cut a stream of batches into batches of `size` rows (the last may be smaller), like map_batches."""
    pending: List[Batch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += len(batch[S.ITEM_ID])
        while count >= size:
            whole = concat_batches(pending)
            yield slice_batch(whole, 0, size)
            rest = slice_batch(whole, size, count)
            count -= size
            pending = [rest] if count else []
    if count:
        yield concat_batches(pending)


def build_stages(config: VlclipConfig) -> Dict[str, object]:
    """One instance of each stage class (models loaded once), as each Ray actor would hold."""
    from vlclip_core.stages.clip_encode import ClipStage
    from vlclip_core.stages.decode import DecodeStage
    from vlclip_core.stages.enrichment import EnrichmentStage
    from vlclip_core.stages.grounding import GroundingStage

    return {
        "decode": DecodeStage(config),
        "grounding": GroundingStage(config),
        "enrichment": EnrichmentStage(config),
        "clip": ClipStage(config),
    }


def chain(stream: Iterable[Batch], stages: Dict[str, object], config: VlclipConfig) -> Iterator[Batch]:
    """decode -> grounding -> enrichment -> clip over work batches, each stage fed its own batch_size."""
    for name in STAGE_ORDER:
        stream = map(stages[name], rebatch(stream, getattr(config.stages, name).batch_size))
    return iter(stream)


def stage_stream(catalog: pa.Table, stages: Dict[str, object], config: VlclipConfig) -> Iterator[Batch]:
    """The chain over a catalog table, read in slices of the decode batch size."""
    size = config.stages.decode.batch_size
    return chain(
        (work_batch(catalog.slice(i, size)) for i in range(0, catalog.num_rows, size)), stages, config
    )


def run_bare_loop(catalog: pa.Table, config: VlclipConfig, threads: int) -> LoopTiming:
    """Run every catalog row through the four stages in this process; time it from before model loading."""
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    stages = build_stages(config)
    timing = LoopTiming(items=catalog.num_rows, load_s=time.perf_counter() - start)
    for batch in stage_stream(catalog, stages, config):
        timing.batch_marks.append((time.perf_counter() - start, len(batch[S.ITEM_ID])))
        timing.ok += int(np.sum(batch[S.STATUS] == S.STATUS_OK))
        timing.llm_calls += int(np.sum(batch[S.LLM_CALLS]))
        timing.detector_calls += int(np.sum(batch[S.GROUNDING_SOURCE] == S.SOURCE_MODEL))
    timing.total_s = time.perf_counter() - start
    timing.first_batch_s = timing.batch_marks[0][0] if timing.batch_marks else 0.0
    return timing
