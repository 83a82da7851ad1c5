"""The shard writer at the end of the Ray pipeline: one Parquet part per (batch, shard), a summary per shard.

A part is named by the item ids it holds, so a retried writer task replaces its earlier part instead
of adding a second copy, and it is written under a hidden name and moved into place, so a reader
never sees half a part. Non-finite vectors (NaN/inf from a model) make their row an error row.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Dict, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.batch import mark_error, writable

# shard_id is not written: it is the name of the part's directory (Spark reads it back from there).
OUTPUT_COLUMNS = (
    S.ITEM_ID,
    S.CONTENT_HASH,
    S.TEXT_HASH,
    S.PRODUCT_TYPE,
    S.IMAGE_URI,
    S.STATUS,
    S.ERROR_STAGE,
    S.ERROR_TYPE,
    S.ERROR_MESSAGE,
    S.IMAGE_SHA,
    S.GROUNDING_BOX,
    S.GROUNDING_SCORE,
    S.GROUNDED,
    S.GROUNDING_REASON,
    S.GROUNDING_SOURCE,
    S.GROUNDING_PROMPT,
    S.ENRICHED_TEXT,
    S.ENRICHMENT_STATUS,
    S.ENRICHMENT_REASON,
    S.ENRICHMENT_SOURCE,
    S.LLM_CALLS,
    S.IMAGE_EMBEDDING,
    S.TEXT_EMBEDDING,
    S.EMBEDDING,
) + tuple(S.STAGE_SECONDS_PREFIX + name for name in S.STAGE_NAMES)
VECTOR_COLUMNS = (S.GROUNDING_BOX, S.IMAGE_EMBEDDING, S.TEXT_EMBEDDING, S.EMBEDDING)
OUTPUT_TYPES = {
    S.GROUNDING_SCORE: pa.float32(),
    S.GROUNDED: pa.bool_(),
    S.LLM_CALLS: pa.int32(),
    **{c: pa.list_(pa.float32()) for c in VECTOR_COLUMNS},
    **{S.STAGE_SECONDS_PREFIX + n: pa.float64() for n in S.STAGE_NAMES},
}
OUTPUT_SCHEMA = pa.schema([(c, OUTPUT_TYPES.get(c, pa.string())) for c in OUTPUT_COLUMNS])


def write_shard_parts(batch, out_dir: str) -> Dict[str, np.ndarray]:
    """Write a batch's rows as one Parquet part per shard; return one summary row per shard."""
    shard_ids = batch[S.SHARD_ID]
    summaries: Dict[str, list] = {
        "shard": [],
        "rows": [],
        "ok": [],
        "errors": [],
        "detector_items": [],
        "llm_calls": [],
    }
    seconds = {name: [] for name in S.STAGE_NAMES}
    fail_non_finite(batch)
    for shard in np.unique(shard_ids):
        rows = np.flatnonzero(shard_ids == shard)
        table = to_arrow({c: batch[c][rows] for c in OUTPUT_COLUMNS if c in batch}, len(rows))
        write_part(table, storage.join(out_dir, f"shard_id={int(shard)}"), part_name(batch[S.ITEM_ID][rows]))
        _summarise(summaries, seconds, batch, rows, int(shard))
    out = {k: np.asarray(v) for k, v in summaries.items()}
    out.update({S.STAGE_SECONDS_PREFIX + k: np.asarray(v, dtype=np.float64) for k, v in seconds.items()})
    return out


def part_name(item_ids: Iterable) -> str:
    """The part file of these items: the same items always give the same name (a retry replaces)."""
    key = "\n".join(sorted(str(i) for i in item_ids)).encode()
    return f"part-{hashlib.sha256(key).hexdigest()[:32]}.parquet"


def write_part(table: pa.Table, shard_dir: str, name: str) -> None:
    """Write a part under a hidden temporary name (readers skip `_` files), then move it into place."""
    fs, local = storage.resolve(storage.join(shard_dir, name))
    folder = local.rsplit("/", 1)[0]
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/_tmp-{uuid.uuid4().hex}-{name}"
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, local)


def fail_non_finite(batch) -> None:
    """Rows still ok whose vectors are missing or hold NaN/inf become error rows of the clip stage."""
    if S.STATUS not in batch or S.EMBEDDING not in batch:
        return
    ok = batch[S.STATUS] == S.STATUS_OK
    bad = np.zeros(len(ok), dtype=bool)
    for column in (S.EMBEDDING, S.IMAGE_EMBEDDING, S.TEXT_EMBEDDING):
        if column in batch:
            bad |= ok & ~_finite_rows(batch[column])
    if bad.any():
        writable(batch)
        for row in np.flatnonzero(bad):
            mark_error(batch, int(row), "clip", "non_finite_vector", "a vector is missing, NaN or infinite")


def _finite_rows(values: np.ndarray) -> np.ndarray:
    """Per row: the vector is present, non-empty and finite."""
    if values.ndim == 2:
        return np.isfinite(values).all(axis=1) & (values.shape[1] > 0)
    return np.array(
        [v is not None and np.size(v) > 0 and bool(np.isfinite(np.asarray(v, dtype=np.float64)).all())
         for v in values],
        dtype=bool,
    )


def summarise_table(table: pa.Table, shard: int) -> Dict:
    """The summary row of one shard's parts as read back from disk (what the done-marker records)."""
    batch = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    keys = ("shard", "rows", "ok", "errors", "detector_items", "llm_calls")
    summaries: Dict[str, list] = {k: [] for k in keys}
    seconds = {name: [] for name in S.STAGE_NAMES}
    _summarise(summaries, seconds, batch, np.arange(table.num_rows), shard)
    out = {k: v[0] for k, v in summaries.items()}
    out.update({S.STAGE_SECONDS_PREFIX + k: v[0] for k, v in seconds.items()})
    return out


def _summarise(summaries, seconds, batch, rows, shard: int) -> None:
    ok = int(np.sum(batch[S.STATUS][rows] == S.STATUS_OK))
    summaries["shard"].append(shard)
    summaries["rows"].append(len(rows))
    summaries["ok"].append(ok)
    summaries["errors"].append(len(rows) - ok)
    sources = batch.get(S.GROUNDING_SOURCE)
    summaries["detector_items"].append(
        int(np.sum(sources[rows] == S.SOURCE_MODEL)) if sources is not None else 0
    )
    calls = batch.get(S.LLM_CALLS)
    summaries["llm_calls"].append(int(np.nansum(calls[rows].astype(np.float64))) if calls is not None else 0)
    for name in S.STAGE_NAMES:
        column = batch.get(S.STAGE_SECONDS_PREFIX + name)
        seconds[name].append(float(np.nansum(column[rows].astype(np.float64))) if column is not None else 0.0)


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
            arrays.append(
                pa.array(
                    values.tolist() if values.dtype == object else values, type=fld.type, from_pandas=True
                )
            )
    return pa.Table.from_arrays(arrays, schema=OUTPUT_SCHEMA)


def _vectors_to_list(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, dtype=np.float32)
    n, dim = values.shape if values.ndim == 2 else (len(values), 0)
    missing = np.isnan(values).any(axis=1) if dim else np.ones(n, dtype=bool)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim)
    return pa.ListArray.from_arrays(
        offsets, pa.array(values.reshape(-1)), type=pa.list_(pa.float32()), mask=pa.array(missing)
    )
