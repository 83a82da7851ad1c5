"""One ANN index per model_version kept in step with embeddings: a streamed full read or its change feed."""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from vlclip_core import schema as S
from vlclip_core.config import IndexConfig, VlclipConfig
from vlclip_core.index.ann import HNSW, IVFPQ, HnswParams, ItemIndex, IvfPqParams, Params, read_state
from vlclip_core.run.state import utcnow
from vlclip_core.warehouse.tables import Tables, table_version

log = logging.getLogger(__name__)
SAMPLE_SEED = 19  # the IVF-PQ training sample: the same table version gives the same index

FULL, INCREMENTAL, UNCHANGED = "full", "incremental", "unchanged"
# Delta errors meaning the change data of a version range cannot be read: CDF was off for part of it,
# its files were vacuumed, or its log entries were cleaned up.
_CDF_UNAVAILABLE = (
    "DELTA_MISSING_CHANGE_DATA",
    "DELTA_CHANGE_DATA_FILE_NOT_FOUND",
    "FileNotFoundException",
    "DELTA_VERSION_NOT_CONTIGUOUS",
    "DELTA_FILE_NOT_FOUND",
    "VersionNotFound",
    "DELTA_CDC_READ_NULL_RANGE_BOUNDARY",
    "FAILED_READ_FILE",
)


@dataclass
class ExportResult:
    """What one export did to one model_version's index."""

    model_version: str
    mode: str  # full | incremental | unchanged
    reason: str
    delta_version: int
    from_version: Optional[int] = None  # incremental: first version applied
    upserted: int = 0
    removed: int = 0
    items: int = 0
    skipped_null: int = 0  # rows without an embedding, left out of the index
    directory: str = ""
    kind: str = HNSW


class ChangeFeedUnavailable(RuntimeError):
    """The change data feed cannot give the changes of the requested version range."""


def index_directory(root: str, model_version: str) -> str:
    """`root`/`model_version`: a local path or an fsspec URL (s3://..., memory://...)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", model_version):
        raise ValueError(f"model_version {model_version!r} cannot name an index directory")
    return f"{root.rstrip('/')}/{model_version}"


def export_indexes(
    spark, config: VlclipConfig, model_versions: Sequence[str] = (), full: bool = False
) -> List[ExportResult]:
    """Build or update the index of each model_version (default: every version in the table)."""
    tables = Tables(spark, config.warehouse)
    version = table_version(tables, "embeddings")
    versions = list(model_versions) or model_versions_at(tables, version)
    root = config.index.directory(config.warehouse)
    return [export_one(tables, mv, version, config.index, index_directory(root, mv), full) for mv in versions]


def model_versions_at(tables: Tables, version: int) -> List[str]:
    rows = (
        tables.read("embeddings", {"versionAsOf": str(version)}).select(S.MODEL_VERSION).distinct().collect()
    )
    return sorted(r[0] for r in rows)


def export_one(
    tables: Tables, model_version: str, version: int, cfg: IndexConfig, directory: str, full: bool = False
) -> ExportResult:
    """Bring one model_version's index to table `version`; logs whether it was rebuilt or updated and why."""
    state = read_state(directory)
    reason = _full_reason(state, version, full, cfg.kind)
    result = None
    if reason is None and state["delta_version"] == version:
        result = ExportResult(
            model_version,
            UNCHANGED,
            "index is at the table's version",
            version,
            items=state["items"],
            directory=directory,
            kind=state.get("kind", HNSW),
        )
    elif reason is None:
        try:
            result = _incremental(tables, model_version, state["delta_version"] + 1, version, cfg, directory)
        except ChangeFeedUnavailable as err:
            reason = f"change data feed unavailable: {err}"
    if result is None:
        result = _full(tables, model_version, version, cfg, directory, reason)
    log.info(
        "index %s: %s to version %d (%s): %d item(s), %d upserted, %d removed",
        model_version,
        result.mode,
        result.delta_version,
        result.reason,
        result.items,
        result.upserted,
        result.removed,
    )
    return result


def _full_reason(state: Optional[dict], version: int, full: bool, kind: str) -> Optional[str]:
    if full:
        return "full rebuild requested"
    if state is None:
        return "no index yet"
    if state.get("kind", HNSW) != kind:
        return f"index.kind is {kind}, the saved index is {state.get('kind', HNSW)}"
    if not state.get("trained", True):
        return "the saved ivfpq index was never trained (its table had no vectors)"
    if state["delta_version"] > version:
        return f"index is at version {state['delta_version']}, past the table's {version} (table recreated?)"
    return None


def _params(cfg: IndexConfig) -> Params:
    if cfg.kind == IVFPQ:
        return IvfPqParams(cfg.ivf_nlist, cfg.pq_m, cfg.pq_nbits, cfg.nprobe)
    return HnswParams(cfg.hnsw_m, cfg.ef_construction, cfg.ef_search)


def _full(
    tables: Tables, model_version: str, version: int, cfg: IndexConfig, directory: str, reason: str
) -> ExportResult:
    from pyspark.sql import functions as F

    rows = (
        tables.read("embeddings", {"versionAsOf": str(version)})
        .where(F.col(S.MODEL_VERSION) == F.lit(model_version))
        .select(S.ITEM_ID, S.EMBEDDING)
    )
    index = _trained(rows, cfg) if cfg.kind == IVFPQ else None
    upserted = skipped = 0
    for batch in row_batches(rows, cfg.batch_size):
        item_ids, vectors, nulls = _vectors(batch)
        skipped += nulls
        if item_ids:
            if index is None:  # an empty index is falsy (len 0): test for None
                index = ItemIndex(vectors.shape[1], _params(cfg))
            index.upsert(item_ids, vectors)
            upserted += len(item_ids)
    if index is None:
        index = ItemIndex(_saved_dim(directory), _params(cfg))
    _save(index, directory, model_version, version, FULL)
    return ExportResult(
        model_version, FULL, reason, version, upserted=upserted, items=len(index), skipped_null=skipped,
        directory=directory, kind=index.kind,
    )


def _trained(rows, cfg: IndexConfig) -> Optional[ItemIndex]:
    """An IVF-PQ index trained on a seeded sample of about cfg.train_size of `rows` (None if empty)."""
    from pyspark.sql import functions as F

    present = rows.where(F.col(S.EMBEDDING).isNotNull())
    total = present.count()
    if not total:
        return None
    sample = present if total <= cfg.train_size else present.sample(
        fraction=min(1.0, 1.2 * cfg.train_size / total), seed=SAMPLE_SEED
    ).limit(cfg.train_size)
    parts = [_vectors(batch)[1] for batch in row_batches(sample, cfg.batch_size)]
    vectors = np.concatenate([p for p in parts if len(p)])
    index = ItemIndex(vectors.shape[1], _params(cfg))
    index.train(vectors)
    return index


def _incremental(
    tables: Tables, model_version: str, start: int, end: int, cfg: IndexConfig, directory: str
) -> ExportResult:
    index = ItemIndex.load(directory, cfg.ef_search, cfg.nprobe)
    removed = upserted = skipped = 0
    try:
        for batch in row_batches(read_changes(tables, model_version, start, end), cfg.batch_size):
            removed += index.remove([r[S.ITEM_ID] for r in batch if r["_change_type"] == "delete"])
            item_ids, vectors, nulls = _vectors([r for r in batch if r["_change_type"] != "delete"])
            skipped += nulls
            if item_ids:
                index.upsert(item_ids, vectors)
                upserted += len(item_ids)
    except Exception as err:  # noqa: BLE001 - only the known "range unavailable" errors are translated
        if any(marker in str(err) for marker in _CDF_UNAVAILABLE):
            raise ChangeFeedUnavailable(_first_line(err)) from err
        raise
    reason = f"change data feed of versions {start}..{end}"
    if index.removed > cfg.max_removed_fraction * max(len(index.ids), 1):
        index = index.compact()
        reason += ", compacted"
    _save(index, directory, model_version, end, INCREMENTAL)
    return ExportResult(
        model_version,
        INCREMENTAL,
        reason,
        end,
        from_version=start,
        upserted=upserted,
        removed=removed,
        items=len(index),
        skipped_null=skipped,
        directory=directory,
        kind=index.kind,
    )


def read_changes(tables: Tables, model_version: str, start: int, end: int):
    """Each item's last change of the version range (a DataFrame: item_id, _change_type, embedding).

    An item's final state is its last insert / update_postimage (upsert) or delete of the range;
    update_preimage rows carry the old vector and are skipped.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    feed = tables.read(
        "embeddings", {"readChangeFeed": "true", "startingVersion": str(start), "endingVersion": str(end)}
    )
    last = Window.partitionBy(S.ITEM_ID).orderBy(
        F.col("_commit_version").desc(), (F.col("_change_type") == "delete").cast("int")
    )
    return (
        feed.where(
            (F.col(S.MODEL_VERSION) == F.lit(model_version)) & (F.col("_change_type") != "update_preimage")
        )
        .withColumn("_rank", F.row_number().over(last))
        .where(F.col("_rank") == 1)
        .select(S.ITEM_ID, "_change_type", S.EMBEDDING)
    )


def row_batches(frame, batch_size: int) -> Iterator[list]:
    """The DataFrame's rows in lists of at most batch_size, streamed to the driver one partition at a time."""
    batch = []
    for row in frame.toLocalIterator(prefetchPartitions=True):
        batch.append(row)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _vectors(rows) -> Tuple[List[str], np.ndarray, int]:
    """(item_ids, vectors, rows skipped for a null embedding) of a list of Rows."""
    present = [r for r in rows if r[S.EMBEDDING] is not None]
    if not present:
        return [], np.zeros((0, 0), dtype=np.float32), len(rows)
    dims = {len(r[S.EMBEDDING]) for r in present}
    if len(dims) != 1:
        raise ValueError(f"embeddings of one model_version must all have one length, got {sorted(dims)}")
    vectors = np.asarray([r[S.EMBEDDING] for r in present], dtype=np.float32)
    return [r[S.ITEM_ID] for r in present], vectors, len(rows) - len(present)


def _saved_dim(directory: str) -> int:
    state = read_state(directory)
    return state["dim"] if state else 1


def _save(index: ItemIndex, directory: str, model_version: str, version: int, mode: str) -> None:
    index.save(
        directory,
        {
            "model_version": model_version,
            "delta_version": version,
            "built": mode,
            "updated_at": utcnow().isoformat(),
        },
    )


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def result_dict(result: ExportResult) -> dict:
    return dataclasses.asdict(result)
