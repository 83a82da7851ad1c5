"""The Delta run lock's lease (real local Spark + Delta): a held lock is refused, a dead holder's lock is
taken over once its lease ends, a renewing holder keeps it, and a holder never deletes a taker's row."""

from __future__ import annotations

import json
import logging
import time

import pytest

from job_helpers import race_for_the_lock

from vlclip_core.warehouse.locks import DeltaRunLock, RunLockedError


def leave_dead_holder_row(spark, staging: str, ended_s_ago: float) -> str:
    """The lock row of a run that died holding the lock: its last renewal gave a lease that ended
    `ended_s_ago` seconds ago. Returns the dead holder's token."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    DeltaRunLock(spark, staging, "create").__enter__().__exit__()
    info = {"run": "dead", "token": "dead-holder-token"}
    row = spark.range(1).select(
        F.lit(DeltaRunLock.KEY).alias("lock"),
        F.lit(info["token"]).alias("token"),
        F.lit(json.dumps(info)).alias("holder"),
        F.expr(f"timestamp_millis(unix_millis(current_timestamp()) - {int(ended_s_ago * 1000)})").alias(
            "expires_at"
        ),
    )
    location = DeltaRunLock(spark, staging, "x").location
    row.write.format("delta").mode("append").save(location)
    assert DeltaTable.forPath(spark, location).toDF().count() == 1
    return info["token"]


def lease_end(spark, location: str):
    return spark.read.format("delta").load(location).first()["expires_at"]


def test_a_renewing_holder_keeps_the_lock_past_its_first_lease_and_a_taker_is_refused(spark, tmp_path):
    """The holder's thread renews the lease: past the end of its first lease a second run is still
    refused, with the holder and the end of its (renewed) lease in the message; after release, it
    takes the lock."""
    staging = str(tmp_path / "staging")
    lease = 45.0  # each renewal is a MERGE: tens of seconds on a loaded 2-core machine
    with DeltaRunLock(spark, staging, "long-run", lease_s=lease) as first:
        started, first_end = time.monotonic(), lease_end(spark, first.location)
        time.sleep(lease + 1)  # the first lease has ended: only the renewals keep the lock
        assert lease_end(spark, first.location) > first_end
        refusal = f"holds the lock table .*{first.info['token']}.*its lease ends at 20"
        with pytest.raises(RunLockedError, match=refusal):
            DeltaRunLock(spark, staging, "second", lease_s=lease).__enter__()
        assert time.monotonic() - started > lease and not first.lost.is_set()
        assert json.loads(first.holder())["token"] == first.info["token"]
        first.renewer.stop()  # one renewal at a time: the thread's and this one would conflict
        assert first.renew()  # still this holder's row
        first.ensure_held()
    with DeltaRunLock(spark, staging, "second", lease_s=60) as second:
        assert json.loads(second.holder())["run"] == "second"


def test_the_lock_of_a_holder_that_died_is_taken_over_once_its_lease_ended(spark, tmp_path, caplog):
    staging = str(tmp_path / "staging")
    dead = leave_dead_holder_row(spark, staging, ended_s_ago=1)
    with caplog.at_level(logging.WARNING, logger="vlclip_core.warehouse.locks"):
        with DeltaRunLock(spark, staging, "next-night", lease_s=60) as lock:
            assert json.loads(lock.holder())["run"] == "next-night"
    assert any(dead in r.getMessage() and "took over" in r.getMessage() for r in caplog.records)
    assert DeltaRunLock(spark, staging, "x").holder() is None


def test_two_takers_of_an_expired_lock_cannot_both_win(spark, tmp_path):
    staging = str(tmp_path / "staging")
    leave_dead_holder_row(spark, staging, ended_s_ago=1)
    outcomes, locks = race_for_the_lock(spark, staging, lease_s=60)
    assert sorted(outcomes) == ["held", "refused"]
    assert json.loads(locks[0].holder())["token"] == locks[0].info["token"]
    locks[0].__exit__(None, None, None)


def test_a_holder_that_stopped_renewing_loses_the_lock_notices_and_leaves_the_takers_row(
    spark, tmp_path, caplog
):
    """Holder A hangs (its renewals stop) past its lease; B takes the lock over. A's next renewal finds
    the row is B's: A logs it and refuses to go on, and A's release leaves B's row in place."""
    staging = str(tmp_path / "staging")
    a = DeltaRunLock(spark, staging, "hung", lease_s=2).__enter__()
    a.renewer.stop()
    time.sleep(2.5)
    with DeltaRunLock(spark, staging, "taker", lease_s=60) as b:
        with caplog.at_level(logging.ERROR, logger="vlclip_core.warehouse.locks"):
            assert a.renew() is False
        assert a.lost.is_set() and any("no longer this run's" in r.getMessage() for r in caplog.records)
        with pytest.raises(RunLockedError, match=f"this run no longer holds .*{b.info['token']}"):
            a.ensure_held()
        a.__exit__(None, None, None)
        assert json.loads(b.holder())["token"] == b.info["token"]
        b.ensure_held()
    assert DeltaRunLock(spark, staging, "x").holder() is None


def test_a_lock_table_without_the_lease_column_gets_it_and_its_row_never_expires(spark, tmp_path):
    """A lock table written before leases existed: taking the lock adds the column; a row without a
    lease is refused (its holder may still run) with the way out in the message."""
    from delta.tables import DeltaTable

    staging = str(tmp_path / "staging")
    location = DeltaRunLock(spark, staging, "x").location
    old_row = [("warehouse", "old-token", '{"run": "old"}')]
    old_schema = "lock string, token string, holder string"
    spark.createDataFrame(old_row, old_schema).write.format("delta").save(location)
    with pytest.raises(RunLockedError, match='"old"}; its row has no lease and never expires.*vlclip unlock'):
        DeltaRunLock(spark, staging, "new", lease_s=60).__enter__()
    assert "expires_at" in DeltaTable.forPath(spark, location).toDF().columns
    assert DeltaRunLock(spark, staging, "unlock").release_by_hand() == '{"run": "old"}'
    with DeltaRunLock(spark, staging, "new", lease_s=60) as lock:
        lock.ensure_held()


def test_run_lock_hands_the_configured_lease_to_the_delta_lock_and_every_lock_answers_ensure_held(tmp_path):
    from vlclip_core.config import ConfigError, load_config
    from vlclip_core.warehouse.locks import run_lock

    assert run_lock(None, "s3a://bucket/staging", "auto", "r", lease_s=30).lease_s == 30.0
    with pytest.raises(ConfigError, match="warehouse.lock_lease_s must be > 0, got 0"):
        load_config("conf/tiny.yaml", ("warehouse.lock_lease_s=0",))
    for mode in ("file", "none"):
        with run_lock(None, str(tmp_path), mode, "r") as lock:
            lock.ensure_held()
