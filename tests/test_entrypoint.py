"""The real entry point, `python -m jobs.embed_catalog`, in a process of its own (its own Spark and Ray)."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
from job_helpers import job_overrides

from vlclip_core.tools.sample_catalog import read_catalog, write_catalog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_entrypoint(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", SPARK_LOCAL_IP="127.0.0.1", PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", "jobs.embed_catalog", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_python_m_entry_point_runs_the_job_end_to_end(tiny_models, sample_root, tmp_path):
    catalog = write_catalog(read_catalog(str(sample_root / "catalog")).slice(0, 6), str(tmp_path / "catalog"))
    warehouse = tmp_path / "wh"
    sets = [
        arg
        for o in job_overrides(tiny_models, catalog, str(warehouse))
        if not o.startswith(("catalog.path", "warehouse.path"))
        for arg in ("--set", o)
    ]
    done = run_entrypoint(
        "--config",
        "conf/tiny.yaml",
        "--catalog",
        catalog,
        "--warehouse",
        str(warehouse),
        "--mode",
        "backfill",
        *sets,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "— succeeded (backfill)" in done.stdout
    # ray.init forks its processes from the driver: they must not reset its py4j connections
    # (spark_session.keep_py4j_connections_across_fork)
    assert "Connection reset" not in done.stderr and "Exception while sending command" not in done.stderr
    assert "selected 6, embedded 6, failed 0" in done.stdout
    embedded = pq.read_table(str(warehouse / "embeddings"), columns=["item_id"], partitioning=None)[
        "item_id"
    ].to_pylist()
    assert sorted(embedded) == sorted(read_catalog(catalog).column("item_id").to_pylist())


def test_entry_point_exits_non_zero_with_the_reason_on_stderr(tmp_path):
    done = run_entrypoint("--config", "conf/tiny.yaml", "--set", "job.mode=sometimes", timeout=120)
    assert done.returncode == 1
    assert "job.mode must be one of incremental, backfill; got 'sometimes'" in done.stderr
    assert done.stdout == ""
