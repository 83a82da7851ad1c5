"""Keep one ANN index per model_version in step with the embeddings table (full read or change feed)."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import pyarrow.compute as pc

from vlclip_core import schema as S
from vlclip_core.config import IndexConfig, VlclipConfig
from vlclip_core.index.ann import HnswParams, ItemIndex, read_state
from vlclip_core.run.state import utcnow
from vlclip_core.warehouse.tables import Tables, table_version

log = logging.getLogger(__name__)

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
    directory: str = ""


class ChangeFeedUnavailable(RuntimeError):
    """The change data feed cannot give the changes of the requested version range."""


def index_directory(root: str, model_version: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", model_version):
        raise ValueError(f"model_version {model_version!r} cannot name an index directory")
    return os.path.join(root, model_version)


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
    reason = _full_reason(state, version, full)
    result = None
    if reason is None and state["delta_version"] == version:
        result = ExportResult(
            model_version,
            UNCHANGED,
            "index is at the table's version",
            version,
            items=state["items"],
            directory=directory,
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


def _full_reason(state: Optional[dict], version: int, full: bool) -> Optional[str]:
    if full:
        return "full rebuild requested"
    if state is None:
        return "no index yet"
    if state["delta_version"] > version:
        return f"index is at version {state['delta_version']}, past the table's {version} (table recreated?)"
    return None


def _params(cfg: IndexConfig) -> HnswParams:
    return HnswParams(cfg.hnsw_m, cfg.ef_construction, cfg.ef_search)


def _full(
    tables: Tables, model_version: str, version: int, cfg: IndexConfig, directory: str, reason: str
) -> ExportResult:
    from pyspark.sql import functions as F

    rows = (
        tables.read("embeddings", {"versionAsOf": str(version)})
        .where(F.col(S.MODEL_VERSION) == F.lit(model_version))
        .select(S.ITEM_ID, S.EMBEDDING)
        .toArrow()
    )
    item_ids, vectors = _vectors(rows)
    index = ItemIndex(vectors.shape[1] if len(item_ids) else _saved_dim(directory), _params(cfg))
    index.upsert(item_ids, vectors)
    _save(index, directory, model_version, version, FULL)
    return ExportResult(
        model_version, FULL, reason, version, upserted=len(item_ids), items=len(index), directory=directory
    )


def _incremental(
    tables: Tables, model_version: str, start: int, end: int, cfg: IndexConfig, directory: str
) -> ExportResult:
    changes = read_changes(tables, model_version, start, end)
    deleted = [r[S.ITEM_ID] for r in changes.to_pylist() if r["_change_type"] == "delete"]
    upserts = changes.filter(pc.not_equal(changes.column("_change_type"), "delete"))
    index = ItemIndex.load(directory, cfg.ef_search)
    removed = index.remove(deleted)
    item_ids, vectors = _vectors(upserts)
    if item_ids:
        index.upsert(item_ids, vectors)
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
        upserted=len(item_ids),
        removed=removed,
        items=len(index),
        directory=directory,
    )


def read_changes(tables: Tables, model_version: str, start: int, end: int):
    """Each item's last change of the version range (Arrow: item_id, _change_type, embedding).

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
    changes = (
        feed.where(
            (F.col(S.MODEL_VERSION) == F.lit(model_version)) & (F.col("_change_type") != "update_preimage")
        )
        .withColumn("_rank", F.row_number().over(last))
        .where(F.col("_rank") == 1)
        .select(S.ITEM_ID, "_change_type", S.EMBEDDING)
    )
    try:
        return changes.toArrow()
    except Exception as err:  # noqa: BLE001 - only the known "range unavailable" errors are translated
        if any(marker in str(err) for marker in _CDF_UNAVAILABLE):
            raise ChangeFeedUnavailable(_first_line(err)) from err
        raise


def _vectors(rows):
    item_ids = rows.column(S.ITEM_ID).to_pylist()
    if not item_ids:
        return [], np.zeros((0, 0), dtype=np.float32)
    lists = rows.column(S.EMBEDDING).combine_chunks()
    dims = set(lists.value_lengths().to_pylist())
    if len(dims) != 1 or lists.null_count:
        raise ValueError(f"embeddings of one model_version must all have one length, got {sorted(dims)}")
    vectors = lists.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(item_ids), -1)
    return item_ids, vectors


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
