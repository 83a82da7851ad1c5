"""The shard writer at the end of the Ray chain: one Parquet part per (batch, shard), a summary per shard."""

from __future__ import annotations

import uuid
from typing import Dict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlclip_core import schema as S
from vlclip_core import storage

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
    for shard in np.unique(shard_ids):
        rows = np.flatnonzero(shard_ids == shard)
        table = to_arrow({c: batch[c][rows] for c in OUTPUT_COLUMNS if c in batch}, len(rows))
        path = storage.join(out_dir, f"shard_id={int(shard)}", f"part-{uuid.uuid4().hex}.parquet")
        fs, local = storage.resolve(path)
        fs.create_dir(local.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, local, filesystem=fs)
        _summarise(summaries, seconds, batch, rows, int(shard))
    out = {k: np.asarray(v) for k, v in summaries.items()}
    out.update({S.STAGE_SECONDS_PREFIX + k: np.asarray(v, dtype=np.float64) for k, v in seconds.items()})
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
