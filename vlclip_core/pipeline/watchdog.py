"""The driver side of a running pipeline: consume the writer's summaries, fail one that stops moving."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Dict, Iterator, Optional

from vlclip_core.pipeline.heartbeat import describe_stall

log = logging.getLogger(__name__)


class PipelineStalledError(RuntimeError):
    """No batch finished within ray.stall_timeout_s."""


def summaries(ds, stall_timeout_s: float, heartbeat=None) -> Iterator[Dict]:
    """Iterate the writer's summary rows; fail with PipelineStalledError when the pipeline stops moving.

    Progress is a finished batch or any stage heartbeat (an actor ready, a batch begun or ended), so
    slow model loading is not a stall but a batch held past the timeout is. The dataset is consumed
    in a thread so that the driver can time out; when the driver stops early (error, stall,
    interruption) the thread closes the iterator, which stops Ray Data's execution.
    """
    results: "queue.Queue" = queue.Queue(maxsize=64)
    stop = threading.Event()
    thread = threading.Thread(target=_consume, args=(ds, results, stop), name="vlclip-pipeline", daemon=True)
    thread.start()
    last_progress = time.time()
    try:
        while True:
            try:
                kind, item = results.get(timeout=min(stall_timeout_s, _POLL_S))
            except queue.Empty:
                snapshot = _snapshot(heartbeat)
                last_progress = max(last_progress, (snapshot or {}).get("last_event", 0.0))
                if time.time() - last_progress > stall_timeout_s:
                    raise PipelineStalledError(
                        f"no progress for {stall_timeout_s:.0f}s: {describe_stall(snapshot)}"
                    ) from None
                continue
            if kind == "end":
                return
            if kind == "error":
                raise item
            last_progress = time.time()
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)  # a thread blocked on a stuck batch ends when the run stops its actors


_POLL_S = 5.0


def _snapshot(heartbeat):
    import ray

    try:
        return ray.get(heartbeat.snapshot.remote(), timeout=10) if heartbeat is not None else None
    except Exception as err:  # noqa: BLE001 - the stall itself is the error to report
        log.warning("could not read stage heartbeats: %s", err)
        return None


# Ray Data keeps one BlockStats per output block of each operator until its Dataset finishes
# (ray-project/ray#66016, open for Ray 2.56-2.60): about 8 KB each, measured, so a backfill of tens of
# millions of items would grow the driver by gigabytes. vlclip reads none of them (the stages time
# themselves through the heartbeat actor), so the driver keeps only the newest of each operator.
KEEP_BLOCK_STATS = 256
TRIM_EVERY_ROWS = 256


def trim_block_stats(ds, keep: Optional[int] = None) -> int:
    """Drop all but the newest `keep` per-block stats of each operator of `ds`'s running execution.

    Returns how many it dropped. Ray's final stats summary of the run then covers the newest blocks only.
    """
    keep = KEEP_BLOCK_STATS if keep is None else keep
    executor = getattr(ds, "_current_executor", None)
    dropped = 0
    for op in getattr(executor, "_topology", None) or ():
        stats = getattr(op, "_output_blocks_stats", None)
        if isinstance(stats, list) and len(stats) > keep:
            dropped += len(stats) - keep
            del stats[:-keep]  # in place: the executor's stats object holds this same list
    return dropped


def _consume(ds, results: "queue.Queue", stop: threading.Event) -> None:
    rows = iter(ds.iter_rows())
    try:
        for n, row in enumerate(rows, 1):
            if not _put(results, ("row", row), stop):
                return
            if n % TRIM_EVERY_ROWS == 0:
                trim_block_stats(ds)
        _put(results, ("end", None), stop)
    except BaseException as err:  # noqa: BLE001 - handed to the driver thread, which re-raises it
        _put(results, ("error", err), stop)
    finally:
        close = getattr(rows, "close", None)
        if close:
            close()


def _put(results: "queue.Queue", item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            results.put(item, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False
