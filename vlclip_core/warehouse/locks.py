"""The warehouse's run lock: a lock file (local or mounted staging) or a Delta lock table (object stores)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import uuid
from typing import Dict, Optional

from vlclip_core import storage
from vlclip_core.run.state import utcnow

log = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another vlclip run holds the warehouse's run lock."""


class RunLock:
    """An exclusive lock on a file in a local or POSIX-mounted directory, so that two runs never share a
    warehouse. It is an flock held for the run: the kernel (or the NFS server's lease) releases it when
    its holder dies, however it dies, so there is no stale lock to take over and no takeover race. The
    file names the holder for the refusal message and is removed on release. Object stores have no
    such lock: they take a DeltaRunLock (warehouse.run_lock)."""

    NAME = "_LOCK"

    def __init__(self, root: str, run_hint: str):
        if not storage.is_local(root):
            raise ValueError(f"a lock file needs a local or mounted directory, got {root!r}")
        self.path = storage.join(root, self.NAME)
        self.info = holder_info(run_hint)
        self.held = False
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        self._acquire_local()
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            storage.delete_file(self.path)  # still holding it: a waiter re-checks the path (below)
            os.close(self._fd)
            self.held, self._fd = False, None

    def _acquire_local(self) -> None:
        path = storage.resolve(self.path)[1]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLockedError(f"another vlclip run holds {path}: {_read_text(path)}") from None
            if _same_file(fd, path):
                break
            os.close(fd)  # its holder removed the file between our open and our lock: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self.info).encode())
        self._fd, self.held = fd, True


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


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
        check_exclusive_log_store(self.spark, self.location)
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


S3_SCHEMES = ("s3", "s3a", "s3n")


def check_exclusive_log_store(spark, location: str) -> None:
    """Refuse a Delta lock on S3 without a LogStore that excludes concurrent writers: S3's default
    LogStore lets two writers commit the same log version, so two runs could both take the lock."""
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    if scheme not in S3_SCHEMES:
        return
    conf = spark.conf
    store = conf.get(f"spark.delta.logStore.{scheme}.impl", None) or conf.get(
        "spark.delta.logStore.class", None
    )
    if not store or "DynamoDB" not in store:
        raise RunLockedError(
            f"the Delta run lock at {location} needs Delta's DynamoDB LogStore (S3 alone cannot exclude "
            f"two concurrent writers, so two runs could both take the lock): set "
            f"spark.delta.logStore.{scheme}.impl=io.delta.storage.S3DynamoDBLogStore and its "
            f"spark.io.delta.storage.S3DynamoDBLogStore.ddb.* settings; got {store!r}"
        )


@contextlib.contextmanager
def sigterm_as_exit():
    """While the run holds its lock, SIGTERM (a scheduler's kill) raises SystemExit in the main thread,
    so the lock is released and the failure recorded instead of the process dying in place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def lock_root(warehouse) -> str:
    """Where a warehouse's run lock lives: the warehouse directory itself (one lock per warehouse,
    whatever staging directory each run uses), or the staging root for a metastore-only warehouse."""
    return warehouse.path if warehouse.path else warehouse.staging()


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
