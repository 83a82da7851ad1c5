"""The batch-stage contract: declared columns, per-row error capture, rows in == rows out, timing."""

from __future__ import annotations

import abc
import logging
import threading
import time
from typing import Callable, Optional, Sequence

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

    # Deadlines (seconds; None: none), set by the pipeline from stages.<name>: a batch whose process()
    # runs past batch_timeout_s is retried row by row, and a row past item_timeout_s becomes an error row
    # (deadline_exceeded) while the run goes on. `on_progress` is called after each row-by-row attempt.
    batch_timeout_s: Optional[float] = None
    item_timeout_s: Optional[float] = None
    on_progress: Optional[Callable[[], None]] = None

    def set_deadlines(self, batch_timeout_s, item_timeout_s, on_progress=None) -> None:
        self.batch_timeout_s, self.item_timeout_s = batch_timeout_s or None, item_timeout_s or None
        self.on_progress = on_progress

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
        single = todo.size == 1
        try:
            self._process_within(batch, todo, out, self.item_timeout_s if single else self.batch_timeout_s)
            return
        except ItemError as err:
            if single:
                mark_error(batch, int(todo[0]), self.name, err.error_type, err.message)
                return
        except Exception as err:  # noqa: BLE001 - isolate the failing rows below
            if single:
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
            if self.on_progress is not None:
                self.on_progress()

    def _process_within(self, batch: Batch, idx: np.ndarray, out: Batch, timeout_s: Optional[float]) -> None:
        """process() under a deadline: it runs in a worker thread on outputs of its own, copied into
        `out` only when it finishes in time (a thread stuck past its deadline is left behind)."""
        if timeout_s is None:
            self.process(batch, idx, out)
            return
        own = self.new_outputs(batch_len(batch))
        ended, failure = threading.Event(), []

        def work():
            try:
                self.process(batch, idx, own)
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                failure.append(err)
            finally:
                ended.set()

        threading.Thread(target=work, name=f"vlclip-{self.name}-deadline", daemon=True).start()
        if not ended.wait(timeout_s):
            raise ItemError(
                "deadline_exceeded",
                f"stage {self.name}: {len(idx)} item(s) still unfinished after {timeout_s:g}s",
            )
        if failure:
            raise failure[0]
        _copy_rows(own, out, idx)


def _copy_rows(src: Batch, dest: Batch, idx: np.ndarray) -> None:
    for name, column in src.items():
        if name in dest and len(dest[name]) == len(column):
            dest[name][idx] = column[idx]
        else:
            dest[name] = column
