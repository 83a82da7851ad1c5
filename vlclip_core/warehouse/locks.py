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
import time
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

    def ensure_held(self) -> None:
        """An flock is never taken from a living holder: nothing to check (DeltaRunLock's can be)."""

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


DEFAULT_LEASE_S = 600.0
_EXPIRES_TEXT = "date_format(expires_at, \"yyyy-MM-dd HH:mm:ssXXX\")"


class DeltaRunLock:
    """The run lock as a row of a Delta table under the lock root, for object-store staging.

    The row carries a lease (`expires_at`, the holder's Spark clock + lease_s) that a daemon thread
    renews every lease_s/3 while the lock is held. A taker inserts the row when there is none, or
    replaces it when its lease has ended (its holder died or hung), in one MERGE whose condition
    reads the row's expiry: of two runs that try at once, Delta's optimistic concurrency lets one
    commit and fails the other with a conflict, so at most one holds it (on S3 this needs Delta's
    multi-writer log store, as every concurrent Delta write does). A holder that finds its row taken
    sets `lost`; `ensure_held()` raises then, and release deletes only the holder's own row. A row
    without a lease (written before leases existed) never expires: `vlclip unlock --config ...`.
    """

    KEY = "warehouse"

    def __init__(self, spark, staging: str, run_hint: str, lease_s: float = DEFAULT_LEASE_S):
        if not lease_s > 0:
            raise ValueError(f"the run lock's lease must be > 0 s, got {lease_s!r}")
        self.spark = spark
        self.location = storage.spark_path(storage.join(staging, "_run_lock"))
        self.info = holder_info(run_hint)
        self.lease_s = float(lease_s)
        self.held = False
        self.lost = threading.Event()
        self.renewer = LeaseRenewer(self)
        self._valid_until = 0.0  # time.monotonic() at which this holder's own lease ends

    def __enter__(self) -> "DeltaRunLock":
        check_exclusive_log_store(self.spark, self.location)
        self._ensure_table()
        current = self._current()
        if current is not None and not current["expired"]:
            raise RunLockedError(
                f"another vlclip run holds the lock table {self.location}: {current['holder']}; "
                f"{_lease_text(current)}"
            )
        started = time.monotonic()
        if not self._take():
            raise RunLockedError(
                f"another vlclip run took the lock table {self.location} at the same time: {self.holder()}"
            )
        if current is not None:
            log.warning("took over the run lock of %s, whose lease ended at %s", current["holder"],
                        current["expires"])
        self._valid_until = started + self.lease_s
        self.held = True
        self.renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.renewer.stop()
        if self.held:
            self._delete_own_row()
            self.held = False

    def ensure_held(self) -> None:
        """Raise RunLockedError unless this run still holds the lock: call before a table write."""
        if self.lost.is_set() or time.monotonic() >= self._valid_until:
            raise RunLockedError(
                f"this run no longer holds the lock table {self.location} (its lease was not renewed in "
                f"time): {self.holder()}"
            )

    def renew(self) -> bool:
        """Extend this holder's lease; False (and `lost` set) when the row is no longer this holder's."""
        started = time.monotonic()
        if self._merge_own_lease():
            self._valid_until = started + self.lease_s
            return True
        log.error("the run lock %s is no longer this run's (%s): %s", self.location, self.info["token"],
                  self.holder())
        self.lost.set()
        return False

    def holder(self) -> Optional[str]:
        current = self._current()
        return current["holder"] if current else None

    def release_by_hand(self) -> Optional[str]:
        """Remove the lock row whoever holds it (the holder died); returns who held it."""
        holder = self.holder()
        if holder is not None:
            self._table().delete(f"lock = '{self.KEY}'")
        return holder

    def _current(self) -> Optional[Dict]:
        """The lock row: holder, token, expires (text) and expired (False for a row without a lease)."""
        rows = (
            self._table()
            .toDF()
            .where(f"lock = '{self.KEY}'")
            .selectExpr("holder", "token", f"{_EXPIRES_TEXT} AS expires",
                        "coalesce(expires_at < current_timestamp(), false) AS expired")
            .collect()
        )
        return rows[0].asDict() if rows else None

    def _row(self):
        from pyspark.sql import functions as F

        millis = int(round(self.lease_s * 1000))
        return self.spark.range(1).select(
            F.lit(self.KEY).alias("lock"),
            F.lit(self.info["token"]).alias("token"),
            F.lit(json.dumps(self.info, sort_keys=True)).alias("holder"),
            F.expr(f"timestamp_millis(unix_millis(current_timestamp()) + {millis})").alias("expires_at"),
        )

    def _take(self) -> bool:
        """Insert the lock row, or replace one whose lease has ended; False when another run won."""
        merge = (
            self._table()
            .alias("t")
            .merge(self._row().alias("s"), "t.lock = s.lock")
            .whenMatchedUpdateAll(condition="t.expires_at < current_timestamp()")
            .whenNotMatchedInsertAll()
        )
        metrics = _merge_or_lose(merge, "the run lock")
        if metrics is None:
            return False
        return int(metrics["num_updated_rows"]) + int(metrics["num_inserted_rows"]) == 1

    def _merge_own_lease(self) -> bool:
        merge = (
            self._table()
            .alias("t")
            .merge(self._row().alias("s"), "t.lock = s.lock AND t.token = s.token")
            .whenMatchedUpdate(set={"expires_at": "s.expires_at"})
        )
        return int(merge.execute().first()["num_updated_rows"]) == 1

    def _delete_own_row(self) -> None:
        """Delete this holder's row only (a taker's row stays); retried when a taker commits meanwhile."""
        for attempt in range(3):
            try:
                self._table().delete(f"lock = '{self.KEY}' AND token = '{self.info['token']}'")
                return
            except Exception as err:  # noqa: BLE001 - a concurrent commit on the lock table: retry
                if not _is_conflict(err) or attempt == 2:
                    raise

    def _ensure_table(self) -> None:
        """Create the lock table, or add the lease column to one that has none. A concurrent run's
        creation or column change wins the race harmlessly (a conflict, or a location that holds files
        or a log before its first commit), so each is followed by a re-check."""
        attempts = 8
        for attempt in range(attempts):
            try:
                self._create_or_upgrade()
                return
            except Exception as err:  # noqa: BLE001 - the other run created or changed it: check again
                if not (_is_conflict(err) or any(c in str(err) for c in CREATION_RACES)):
                    raise
                if attempt == attempts - 1:
                    raise
                log.info("the lock table changed under this run (%s); checking it again", type(err).__name__)
                time.sleep(0.5 * (attempt + 1))

    def _create_or_upgrade(self) -> None:
        from delta.tables import DeltaTable

        (
            DeltaTable.createIfNotExists(self.spark)
            .location(self.location)
            .addColumn("lock", "STRING")
            .addColumn("token", "STRING")
            .addColumn("holder", "STRING")
            .addColumn("expires_at", "TIMESTAMP")
            .execute()
        )
        if "expires_at" not in self._table().toDF().columns:
            self.spark.sql(f"ALTER TABLE delta.`{self.location}` ADD COLUMNS (expires_at TIMESTAMP)")

    def _table(self):
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, self.location)


# What a run sees while another creates the lock table: its log without a commit, or its first files
CREATION_RACES = ("DELTA_TABLE_NOT_FOUND", "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION")


class LeaseRenewer:
    """The daemon thread that renews a DeltaRunLock's lease every lease_s/3 until stopped or lost.
    A failed renewal (the store briefly unreachable, a conflict) is retried at the next tick; the
    holder's own lease keeps counting down meanwhile (ensure_held)."""

    def __init__(self, lock: DeltaRunLock):
        self.lock = lock
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vlclip-lock-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        """Ticks every lease_s/3 from the previous tick's start, so a slow renewal does not delay the next."""
        period, tick = self.lock.lease_s / 3, time.monotonic()
        while not self._stop.wait(max(0.0, tick + period - time.monotonic())):
            tick = time.monotonic()
            try:
                if not self.lock.renew():
                    return
            except Exception as err:  # noqa: BLE001 - retried at the next tick
                log.warning("could not renew the run lock's lease (%s: %s)", type(err).__name__, err)


def _lease_text(current: Dict) -> str:
    if current["expires"] is None:
        return "its row has no lease and never expires (remove it with `vlclip unlock` once its run is gone)"
    return f"its lease ends at {current['expires']}"


def _merge_or_lose(merge, what: str):
    """Execute a MERGE; None when a concurrent commit won (Delta's conflict check)."""
    try:
        return merge.execute().first()
    except Exception as err:  # noqa: BLE001 - a concurrent commit: the other run won
        if not _is_conflict(err):
            raise
        log.info("lost the race for %s: %s", what, type(err).__name__)
        return None


def _is_conflict(err: BaseException) -> bool:
    """A Delta optimistic-concurrency conflict (ConcurrentAppendException, MetadataChangedException...)."""
    return "Concurrent" in type(err).__name__ or "concurrent" in str(err).lower()


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


def run_lock(spark, staging: str, mode: str, run_hint: str, lease_s: float = DEFAULT_LEASE_S):
    """The lock for warehouse.run_lock: file (local or mounted staging), delta (any staging, with a
    lease of lease_s: warehouse.lock_lease_s), none, or auto (file for local staging, delta
    otherwise). `none`: the user's scheduler never overlaps runs."""
    if mode == "auto":
        mode = "file" if storage.is_local(staging) else "delta"
    if mode == "file":
        return RunLock(staging, run_hint)
    if mode == "delta":
        return DeltaRunLock(spark, staging, run_hint, lease_s)
    log.warning("warehouse.run_lock=none: nothing stops two runs on this warehouse at once")
    return NoRunLock()


class NoRunLock:
    """warehouse.run_lock=none: no lock, and nothing to lose."""

    def __enter__(self) -> "NoRunLock":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def ensure_held(self) -> None:
        """Nothing is held: nothing to check."""


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return ""
