"""The driver side of a running pipeline: consume the writer's summaries, fail one that stops moving."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Dict, Iterator

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


def _consume(ds, results: "queue.Queue", stop: threading.Event) -> None:
    rows = iter(ds.iter_rows())
    try:
        for row in rows:
            if not _put(results, ("row", row), stop):
                return
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
