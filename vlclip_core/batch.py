"""A batch of items as Ray hands it to a stage (column name -> numpy array), and the row helpers on it."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Sequence

import numpy as np

from vlclip_core import schema as S
from vlclip_core.errors import StageInputError

Batch = Dict[str, np.ndarray]


def check_columns(batch: Batch, required: Sequence[str], stage: str) -> None:
    missing = [c for c in required if c not in batch]
    if missing:
        raise StageInputError(f"stage {stage!r} is missing input column(s): {', '.join(missing)}")


def batch_len(batch: Batch) -> int:
    return len(batch[S.ITEM_ID])


def object_column(n: int, fill=None) -> np.ndarray:
    """An object column of `n` cells, each `fill`."""
    return object_values([fill] * n)


def object_values(values: Iterable) -> np.ndarray:
    """An object column with one cell per value (a list or an array value stays one cell)."""
    values = list(values)
    col = np.empty(len(values), dtype=object)
    col[:] = values
    return col


def is_null(value: Any) -> bool:
    """A cell without a value: None, or the float NaN that Ray and pandas put in a null cell."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def writable(batch: Batch) -> Batch:
    """Make a batch from Ray safe to update in place.

    Ray hands out zero-copy, read-only arrays (copied here), and a column whose values are all null
    (an all-None string, bytes or bool column) arrives as float NaN: it becomes an object column of
    None again, so that a stage can write strings into it.
    """
    for name, values in batch.items():
        if not isinstance(values, np.ndarray):
            continue
        if values.ndim == 1 and values.dtype.kind == "f" and values.size and np.isnan(values).all():
            batch[name] = object_column(len(values))
        elif not values.flags.writeable:
            batch[name] = values.copy()
    return batch


def ensure_status_columns(batch: Batch) -> Batch:
    """Add the status/error columns to a batch that enters the first stage."""
    n = batch_len(batch)
    if S.STATUS not in batch:
        batch[S.STATUS] = object_column(n, S.STATUS_OK)
    for col in (S.ERROR_STAGE, S.ERROR_TYPE, S.ERROR_MESSAGE):
        batch.setdefault(col, object_column(n))
    return batch


def mark_error(batch: Batch, row: int, stage: str, error_type: str, message: str) -> None:
    batch[S.STATUS][row] = S.STATUS_ERROR
    batch[S.ERROR_STAGE][row] = stage
    batch[S.ERROR_TYPE][row] = error_type
    batch[S.ERROR_MESSAGE][row] = str(message)[:2000]
