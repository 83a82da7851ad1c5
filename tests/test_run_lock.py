"""The warehouse run lock: one per warehouse whatever the staging directory, held by a real job process,
released by the kernel when that process is killed, refused on S3 without an exclusive LogStore."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from job_helpers import REPO, job_overrides

from vlclip_core.warehouse.locks import RunLock, RunLockedError


def start_job(tiny_models, catalog, warehouse, *extra):
    sets = job_overrides(tiny_models, str(catalog), str(warehouse)) + extra
    args = [a for o in sets for a in ("--set", o)]
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.embed_catalog", "--config", "conf/tiny.yaml", *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(predicate, proc, timeout_s=420):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    return predicate()


@pytest.mark.usefixtures("ray_local")
def test_a_job_with_its_own_staging_dir_cannot_run_beside_another_on_one_warehouse(
    spark, make_config, tiny_models, sample_root, tmp_path
):
    """Job process A (staging dir s1) is running; run B on the same warehouse with staging dir s2 is
    refused before it changes any table; once A is SIGKILLed, the lock is free at once."""
    from vlclip_core.run.job import run_job

    warehouse, s1 = tmp_path / "wh", tmp_path / "s1"
    proc = start_job(tiny_models, sample_root / "catalog", warehouse, f"warehouse.staging_dir={s1}")
    try:
        assert wait_for(lambda: list(s1.glob("*/manifest.json")), proc), "job A never created its run"
        second = make_config(sample_root / "catalog", warehouse, f"warehouse.staging_dir={tmp_path / 's2'}")
        with pytest.raises(RunLockedError, match="another vlclip run holds"):
            run_job(second, spark)
        assert not list((tmp_path / "s2").glob("*/manifest.json"))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    from vlclip_core.warehouse.locks import lock_root

    with RunLock(lock_root(second.warehouse), "after-kill") as lock:  # no stale lock to wait for
        assert lock.held


def test_sigterm_while_holding_the_lock_releases_it(tmp_path):
    """A process holding the lock is sent SIGTERM (a scheduler's kill): the lock file is released."""
    code = (
        "import sys, time\n"
        "from vlclip_core.warehouse.locks import RunLock, sigterm_as_exit\n"
        f"with sigterm_as_exit(), RunLock({str(tmp_path)!r}, 'holder'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE
    )
    assert proc.stdout.readline().strip() == b"held"
    with pytest.raises(RunLockedError):
        RunLock(str(tmp_path), "second").__enter__()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert not (tmp_path / "_LOCK").exists()
    with RunLock(str(tmp_path), "second") as lock:
        assert lock.held


def test_the_delta_lock_refuses_s3_without_the_dynamodb_log_store(spark):
    from vlclip_core.warehouse.locks import DeltaRunLock

    with pytest.raises(RunLockedError, match="needs Delta's DynamoDB LogStore"):
        DeltaRunLock(spark, "s3a://bucket/warehouse", "r").__enter__()
