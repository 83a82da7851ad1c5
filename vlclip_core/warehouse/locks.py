"""The warehouse's run lock: a lock file (local or mounted staging) or a Delta lock table (object stores)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
from typing import Dict, Optional

from vlclip_core import storage
from vlclip_core.run.state import utcnow

log = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another vlclip run holds the warehouse's run lock."""


class RunLock:
    """An exclusive lock file in a local or POSIX-mounted staging root (O_EXCL), so that two runs never
    share a warehouse; a lock left by a dead process on this host is taken over. Object stores have no
    exclusive create: they take a DeltaRunLock (warehouse.run_lock)."""

    def __init__(self, staging: str, run_hint: str):
        if not storage.is_local(staging):
            raise ValueError(f"a lock file needs a local or mounted staging directory, got {staging!r}")
        self.path = storage.join(staging, "_LOCK")
        self.info = holder_info(run_hint)
        self.held = False

    def __enter__(self) -> "RunLock":
        self._acquire_local()
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            storage.delete_file(self.path)
            self.held = False

    def _acquire_local(self) -> None:
        path = storage.resolve(self.path)[1]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale(path)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(self.info, fh)
            self.held = True
            return
        raise RunLockedError(f"another vlclip run holds {path}: {_read_text(path)}")

    def _take_over_if_stale(self, path: str) -> None:
        try:
            holder = json.loads(_read_text(path))
        except ValueError:
            return
        if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
            log.warning(
                "removing stale run lock of dead process %s (run %s)", holder.get("pid"), holder.get("run")
            )
            os.unlink(path)
            return
        raise RunLockedError(f"another vlclip run holds {path}: {json.dumps(holder)}")


def holder_info(run_hint: str) -> Dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "run": run_hint,
        "since": utcnow().isoformat(),
        "token": uuid.uuid4().hex,
    }


class DeltaRunLock:
    """The run lock as a row of a Delta table under the staging root, for object-store staging.

    Taking it is a MERGE that inserts the lock row when there is none: of two runs that try at once,
    Delta's optimistic concurrency lets one commit and fails the other with a conflict, so at most
    one holds it (on S3 this needs Delta's multi-writer log store, as every concurrent Delta write
    does). A lock whose holder died must be removed by hand: `vlclip unlock --config ...`.
    """

    KEY = "warehouse"

    def __init__(self, spark, staging: str, run_hint: str):
        self.spark = spark
        self.location = storage.spark_path(storage.join(staging, "_run_lock"))
        self.info = holder_info(run_hint)
        self.held = False

    def __enter__(self) -> "DeltaRunLock":
        self._ensure_table()
        holder = self.holder()
        if holder is not None:
            raise RunLockedError(f"another vlclip run holds the lock table {self.location}: {holder}")
        if not self._insert():
            raise RunLockedError(
                f"another vlclip run took the lock table {self.location} at the same time: {self.holder()}"
            )
        self.held = True
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            self._table().delete(f"lock = '{self.KEY}' AND token = '{self.info['token']}'")
            self.held = False

    def holder(self) -> Optional[str]:
        rows = self._table().toDF().where(f"lock = '{self.KEY}'").select("holder").collect()
        return rows[0]["holder"] if rows else None

    def release_by_hand(self) -> Optional[str]:
        """Remove the lock row whoever holds it (the holder died); returns who held it."""
        holder = self.holder()
        if holder is not None:
            self._table().delete(f"lock = '{self.KEY}'")
        return holder

    def _insert(self) -> bool:
        from pyspark.sql import functions as F

        row = self.spark.range(1).select(
            F.lit(self.KEY).alias("lock"),
            F.lit(self.info["token"]).alias("token"),
            F.lit(json.dumps(self.info, sort_keys=True)).alias("holder"),
        )
        try:
            metrics = (
                self._table()
                .alias("t")
                .merge(row.alias("s"), "t.lock = s.lock")
                .whenNotMatchedInsertAll()
                .execute()
                .first()
            )
        except Exception as err:  # noqa: BLE001 - a concurrent commit: the other run won
            if "Concurrent" not in type(err).__name__ and "concurrent" not in str(err).lower():
                raise
            log.info("lost the race for the run lock: %s", type(err).__name__)
            return False
        return int(metrics["num_inserted_rows"]) == 1

    def _ensure_table(self) -> None:
        from delta.tables import DeltaTable

        (
            DeltaTable.createIfNotExists(self.spark)
            .location(self.location)
            .addColumn("lock", "STRING")
            .addColumn("token", "STRING")
            .addColumn("holder", "STRING")
            .execute()
        )

    def _table(self):
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, self.location)


def run_lock(spark, staging: str, mode: str, run_hint: str):
    """The lock for warehouse.run_lock: file (local or mounted staging), delta (any staging), none, or
    auto (file for local staging, delta otherwise). `none`: the user's scheduler never overlaps runs."""
    if mode == "auto":
        mode = "file" if storage.is_local(staging) else "delta"
    if mode == "file":
        return RunLock(staging, run_hint)
    if mode == "delta":
        return DeltaRunLock(spark, staging, run_hint)
    log.warning("warehouse.run_lock=none: nothing stops two runs on this warehouse at once")
    return contextlib.nullcontext()


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
