"""The batch-stage contract: declared columns, per-row error capture, rows in == rows out, timing."""
from __future__ import annotations

import abc
import logging
import time
from typing import Dict, Sequence

import numpy as np

from vlclip_core import schema as S

log = logging.getLogger(__name__)

Batch = Dict[str, np.ndarray]


class StageInputError(KeyError):
    """A batch lacks columns a stage needs (the message names them)."""


class ItemError(Exception):
    """One item cannot go through a stage; it becomes an error row with this type and message."""

    def __init__(self, error_type: str, message: str):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


def check_columns(batch: Batch, required: Sequence[str], stage: str) -> None:
    missing = [c for c in required if c not in batch]
    if missing:
        raise StageInputError(f"stage {stage!r} is missing input column(s): {', '.join(missing)}")


def batch_len(batch: Batch) -> int:
    return len(batch[S.ITEM_ID])


def object_column(n: int, fill=None) -> np.ndarray:
    col = np.empty(n, dtype=object)
    col[:] = [fill] * n
    return col


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


class BatchStage(abc.ABC):
    """Base of every pipeline stage.

    Subclasses set `name` and `inputs`, build their model in `__init__` (once per actor), allocate
    their output columns in `new_outputs(n)` and fill rows `idx` in `process(batch, idx, out)`.
    Rows already in error pass through untouched. When a whole batch fails, the rows are retried one
    at a time so that one bad item cannot take its neighbours down; an `ItemError` (or any other
    exception) on a single row turns that row into an error row for this stage.
    """

    name: str = "stage"
    inputs: Sequence[str] = ()

    def new_outputs(self, n: int) -> Batch:
        return {}

    @abc.abstractmethod
    def process(self, batch: Batch, idx: np.ndarray, out: Batch) -> None:
        """Fill `out[...]` at rows `idx` (all with status ok); raise ItemError for a bad item."""

    def __call__(self, batch: Batch) -> Batch:
        start = time.perf_counter()
        ensure_status_columns(writable(batch))
        check_columns(batch, self.inputs, self.name)
        n = batch_len(batch)
        out = self.new_outputs(n)
        todo = np.flatnonzero(batch[S.STATUS] == S.STATUS_OK)
        if todo.size:
            self._run(batch, todo, out)
        batch.update(out)
        if any(len(col) != n for col in batch.values()):
            raise RuntimeError(f"stage {self.name!r} changed the number of rows of a batch of {n}")
        batch[S.STAGE_SECONDS_PREFIX + self.name] = np.full(n, (time.perf_counter() - start) / max(n, 1))
        return batch

    def _run(self, batch: Batch, todo: np.ndarray, out: Batch) -> None:
        try:
            self.process(batch, todo, out)
            return
        except ItemError as err:
            if todo.size == 1:
                mark_error(batch, int(todo[0]), self.name, err.error_type, err.message)
                return
        except Exception as err:  # noqa: BLE001 - isolate the failing rows below
            if todo.size == 1:
                mark_error(batch, int(todo[0]), self.name, type(err).__name__, str(err))
                return
            log.warning("stage %s: batch of %d failed (%s: %s); retrying row by row",
                        self.name, todo.size, type(err).__name__, err)
        for row in todo:
            self._run(batch, np.array([row]), out)

