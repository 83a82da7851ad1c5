"""The batch-stage contract: declared columns, per-row error capture, rows in == rows out, timing."""

from __future__ import annotations

import abc
import logging
import time
from typing import Sequence

import numpy as np

from vlclip_core import schema as S
from vlclip_core.batch import Batch, batch_len, check_columns, ensure_status_columns, mark_error, writable
from vlclip_core.errors import ItemError

log = logging.getLogger(__name__)


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
            log.warning(
                "stage %s: batch of %d failed (%s: %s); retrying row by row",
                self.name,
                todo.size,
                type(err).__name__,
                err,
            )
        for row in todo:
            self._run(batch, np.array([row]), out)
