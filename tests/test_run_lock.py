"""The warehouse run lock: one per warehouse whatever the staging directory, held by a real job process,
released by the kernel when that process is killed (whose run then resumes), refused on S3 without an
exclusive LogStore."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from job_helpers import REPO, job_overrides

from vlclip_core.config import load_config
from vlclip_core.run.audit import check_run
from vlclip_core.run.state import open_run
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
@pytest.mark.timeout(900)  # one job process that runs to its first shard, then a rerun of the killed run
def test_a_running_job_locks_out_another_and_resumes_without_duplicates_after_a_sigkill(
    spark, make_config, tiny_models, sample_root, tmp_path
):
    """Job process A (`python -m jobs.embed_catalog`, a backfill, staging dir s1) is running; run B on the
    same warehouse with staging dir s2 is refused before it changes any table. A is SIGKILLed once it
    has finished a shard: the lock is free at once, and the rerun resumes A's run without rerunning
    the finished shard or duplicating an item."""
    from vlclip_core.run.job import run_job
    from vlclip_core.tools.sample_catalog import read_catalog
    from vlclip_core.warehouse.locks import lock_root
    from vlclip_core.warehouse.tables import Tables

    catalog, warehouse, s1 = sample_root / "catalog", tmp_path / "wh", tmp_path / "s1"
    sharding = ("job.mode=backfill", "job.shard_size=4")
    extra = (f"warehouse.staging_dir={s1}", *sharding, "stages.grounding.batch_size=2")
    proc = start_job(tiny_models, catalog, warehouse, *extra)
    try:
        assert wait_for(lambda: list(s1.glob("*/manifest.json")), proc), "job A never created its run"
        second = make_config(catalog, warehouse, f"warehouse.staging_dir={tmp_path / 's2'}")
        with pytest.raises(RunLockedError, match="another vlclip run holds"):
            run_job(second, spark)
        assert not list((tmp_path / "s2").glob("*/manifest.json"))
        assert wait_for(lambda: list(s1.glob("*/done/shard-*.json")), proc), "job A never finished a shard"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    with RunLock(lock_root(second.warehouse), "after-kill") as lock:  # no stale lock to wait for
        assert lock.held

    done_before = sorted(p.name for p in s1.glob("*/done/shard-*.json"))
    (run_dir,) = [p for p in s1.iterdir() if not p.name.startswith("_")]
    marker = run_dir / "done" / done_before[0]
    finished = (marker.read_text(), marker.stat().st_mtime_ns)
    config = make_config(catalog, warehouse, f"warehouse.staging_dir={s1}", *sharding)
    report = run_job(config, spark)
    assert report.resumed and report.run_id == run_dir.name
    assert (marker.read_text(), marker.stat().st_mtime_ns) == finished  # a finished shard is not rerun
    tables = Tables(spark, config.warehouse)
    ids = [r.item_id for r in tables.read("embeddings").collect()]
    assert len(ids) == len(set(ids)) == read_catalog(str(catalog)).num_rows
    state = open_run(config.warehouse.staging(), report.run_id)
    assert state is not None and state.status == "committed"
    assert check_run(spark, tables, state) == []


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


def start_null_job(catalog, warehouse, staging, tag, log_path, *extra):
    """A job process of the null profile; every Delta commit it makes carries `tag` as its userMetadata."""
    conf = f"{{spark.sql.shuffle.partitions: 2, spark.databricks.delta.commitInfo.userMetadata: {tag}}}"
    sets = (
        f"catalog.path={catalog}",
        f"warehouse.path={warehouse}",
        f"warehouse.staging_dir={staging}",
        f"spark.conf={conf}",
        "job.shard_size=3",
        "job.log_every_s=1",
    ) + extra
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "jobs.embed_catalog", "--config", "conf/null.yaml",
             *[a for o in sets for a in ("--set", o)]],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=REPO),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )


def delta_tables(root):
    return sorted(str(p.parent) for p in root.glob("*/_delta_log"))


@pytest.mark.parametrize("lock", ["delta"])  # the file lock's refusal: the test above
def test_two_job_processes_on_one_warehouse_with_two_staging_dirs_one_runs_and_the_other_is_refused(
    spark, sample_root, tmp_path, lock
):
    """Two job processes start at once on one warehouse, each with its own staging directory. Their
    images are held by a loopback server until one process has exited, so the two runs overlap: exactly
    one runs, the other fails with the lock refusal having committed nothing to any table of the
    warehouse; afterwards every item is embedded exactly once."""
    from delta.tables import DeltaTable
    from http_fault_server import FaultServer

    from vlclip_core.tools.sample_catalog import read_catalog, write_catalog
    from vlclip_core.warehouse.tables import Tables

    n, warehouse = 6, tmp_path / "wh"
    with FaultServer(slow_s=300) as srv:
        table = read_catalog(str(sample_root / "catalog")).slice(0, n)
        uris = [srv.url(f"/slow?item={i}") for i in range(n)]
        table = table.set_column(table.schema.get_field_index("image_uri"), "image_uri", pa.array(uris))
        catalog = write_catalog(table, str(tmp_path / "cat"))
        extra = (f"warehouse.run_lock={lock}", "images.allowed_hosts=[127.0.0.1]",
                 "images.read_timeout_s=240",
                 "images.total_timeout_s=250")
        procs = {
            tag: start_null_job(catalog, warehouse, tmp_path / f"staging-{tag}", tag, tmp_path / f"{tag}.log",
                                *extra)
            for tag in ("job-a", "job-b")
        }
        try:
            deadline = time.monotonic() + 420
            while all(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
                time.sleep(0.5)
            exited = [tag for tag, p in procs.items() if p.poll() is not None]
            srv.stop.set()  # the first process has exited: let the other one's images through
            assert len(exited) == 1, {tag: (tmp_path / f"{tag}.log").read_text()[-2000:] for tag in procs}
            (loser,) = exited
            (winner,) = set(procs) - {loser}
            assert procs[winner].wait(timeout=420) == 0, (tmp_path / f"{winner}.log").read_text()[-3000:]
        finally:
            for p in procs.values():
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    refusal = (tmp_path / f"{loser}.log").read_text()
    # refused on seeing the winner's lock, or (delta) on losing the same-moment MERGE to it
    assert procs[loser].returncode == 1
    assert re.search("RunLockedError: another vlclip run (holds|took)", refusal), refusal[-2000:]
    assert not list((tmp_path / f"staging-{loser}").glob("*/manifest.json"))
    data_tables = [t for t in delta_tables(warehouse) if not t.endswith("_run_lock")]
    assert len(data_tables) >= 3
    for location in data_tables:
        history = DeltaTable.forPath(spark, location).history().collect()
        authors = {(r.userMetadata or "").split(" | ")[0] for r in history}  # a commit group adds its own
        assert authors == {winner}, location
    tables = Tables(spark, load_config("conf/null.yaml", (f"warehouse.path={warehouse}",)).warehouse)
    embedded = tables.read("embeddings")
    assert embedded.count() == embedded.select("item_id").distinct().count() == n
    assert [r.status for r in tables.read("runs").collect()] == ["succeeded"]
