"""The job through the real spark-submit: exit 1 naming the flags without Delta; `vlclip submit` adds them."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import pyarrow as pa
import pytest
from job_helpers import REPO, job_overrides

from vlclip_core.tools.sample_catalog import read_catalog, write_catalog
from vlclip_core.tools.submit import main as submit_main
from vlclip_core.warehouse.delta_setup import cached_jars, installed_build

ITEMS = 4
EXTENSION_FLAG = "--conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension"
CATALOG_FLAG = "--conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog"


def delta_package_of_delta_pip() -> str:
    """The coordinate Delta's own helper picks for the installed versions (what `make install` cached)."""
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    return configure_spark_with_delta_pip(SparkSession.Builder())._options["spark.jars.packages"]


def pyspark_submit() -> str:
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")


def run_env() -> dict:
    """This Python for the driver, the repo importable, loopback Spark, and no proxy to any download site:
    Ivy must find the Delta jars in its cache (a download attempt fails against the closed port)."""
    env = dict(os.environ, PYTHONPATH=REPO, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    for name in ("SPARK_HOME", "PYSPARK_SUBMIT_ARGS", "PYSPARK_DRIVER_PYTHON"):
        env.pop(name, None)
    dead = "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=9 -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=9"
    env["SPARK_SUBMIT_OPTS"] = dead
    return env


def run(cmd: list, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `cmd` in a process group of its own; however the wait ends, nothing of it is left running."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # spark-submit's JVM, the Python driver it started and that driver's Ray
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def job_args(tiny_models, catalog: str, warehouse: str) -> list:
    sets = [
        arg
        for o in job_overrides(tiny_models, catalog, warehouse)
        if not o.startswith(("catalog.path", "warehouse.path"))
        for arg in ("--set", o)
    ]
    return [
        "--config",
        "conf/tiny.yaml",
        "--catalog",
        catalog,
        "--warehouse",
        warehouse,
        "--mode",
        "backfill",
    ] + sets


@pytest.fixture
def tiny_catalog(sample_root, tmp_path) -> str:
    return write_catalog(
        read_catalog(str(sample_root / "catalog")).slice(0, ITEMS), str(tmp_path / "catalog")
    )


def query(table_dir: str, sql: str) -> list:
    from deltalake import DeltaTable, QueryBuilder

    return pa.table(QueryBuilder().register("t", DeltaTable(table_dir)).execute(sql).read_all()).to_pylist()


def test_spark_submit_without_delta_exits_1_naming_the_flags(tiny_models, tiny_catalog, tmp_path):
    warehouse = str(tmp_path / "wh")
    done = run(
        [pyspark_submit(), os.path.join(REPO, "jobs", "embed_catalog.py")]
        + job_args(tiny_models, tiny_catalog, warehouse),
        timeout=300,
    )
    output = done.stdout + done.stderr  # spark-submit merges the Python driver's stderr into its stdout
    assert done.returncode == 1, output[-3000:]
    assert (
        "vlclip: run failed: DeltaSetupError: the Delta Lake classes are not on this Spark session" in output
    )
    assert f"--packages {delta_package_of_delta_pip()} {EXTENSION_FLAG} {CATALOG_FLAG}" in output
    jars = output.split("  --jars ", 1)[1].split()[0].split(",")
    assert [os.path.basename(p) for p in jars] == [
        f"io.delta_{installed_build().artifact}-{installed_build().delta_version}.jar",
        f"io.delta_delta-storage-{installed_build().delta_version}.jar",
    ]
    assert all(os.path.isfile(p) for p in jars)  # the Ivy cache `make install` warmed
    assert "JavaPackage" not in output
    assert not os.path.exists(warehouse)  # failed before any table was created


@pytest.mark.timeout(900)  # 442 s measured at load average ~32 on 2 cores, over 600 s at ~75
def test_vlclip_submit_runs_the_job_and_its_tables_are_there(tiny_models, tiny_catalog, tmp_path):
    warehouse = str(tmp_path / "wh")
    spark_options = ["--master", "local[2]", "--driver-memory", "1g", "--conf", "spark.ui.enabled=false"]
    done = run(
        [sys.executable, "-m", "vlclip_core.tools.cli", "submit", *spark_options, "--"]
        + job_args(tiny_models, tiny_catalog, warehouse),
        timeout=840,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"selected {ITEMS}, embedded {ITEMS}, failed 0" in output
    ids = query(f"{warehouse}/embeddings", "SELECT item_id FROM t")
    assert sorted(r["item_id"] for r in ids) == sorted(
        read_catalog(tiny_catalog).column("item_id").to_pylist()
    )
    runs = query(f"{warehouse}/runs", "SELECT status, items_embedded FROM t")
    assert runs == [{"status": "succeeded", "items_embedded": ITEMS}]


def test_vlclip_submit_exits_with_the_jobs_exit_code():
    done = run(
        [sys.executable, "-m", "vlclip_core.tools.cli", "submit", "--master", "local[1]", "--"]
        + ["--config", "conf/tiny.yaml", "--set", "job.mode=sometimes"],
        timeout=300,
    )
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert "job.mode must be one of incremental, backfill; got 'sometimes'" in done.stdout + done.stderr


def printed_command(capsys, *argv: str) -> list:
    assert submit_main(["--print", *argv]) == 0
    return shlex.split(capsys.readouterr().out)


def test_submit_adds_the_delta_package_and_confs_and_passes_the_rest(capsys, monkeypatch):
    import jobs

    monkeypatch.delenv("SPARK_HOME", raising=False)
    cmd = printed_command(
        capsys,
        "--job",
        "train",
        "--master",
        "yarn",
        "--conf",
        "spark.executor.memory=4g",
        "--",
        "--config",
        "conf/train_prod.yaml",
        "--set",
        "train.steps=5",
    )
    packages = cmd[cmd.index("--packages") + 1]
    assert packages == delta_package_of_delta_pip()
    assert cmd[0] == pyspark_submit()  # SPARK_HOME unset: the installed pyspark's
    assert cmd[1:5] == ["--packages", packages, "--master", "yarn"]
    assert EXTENSION_FLAG in shlex.join(cmd) and CATALOG_FLAG in shlex.join(cmd)
    job = os.path.join(os.path.dirname(jobs.__file__), "train_clip.py")
    assert cmd[cmd.index(job):] == [job, "--config", "conf/train_prod.yaml", "--set", "train.steps=5"]


def test_submit_merges_into_the_users_packages_and_keeps_their_confs(capsys):
    cmd = printed_command(
        capsys,
        "--packages",
        "org.example:extra_2.13:1.0",
        "--conf",
        "spark.sql.extensions=com.example.Ext,io.delta.sql.DeltaSparkSessionExtension",
        "--job=export",
        "--",
    )
    assert cmd.count("--packages") == 1
    assert cmd[cmd.index("--packages") + 1] == f"org.example:extra_2.13:1.0,{delta_package_of_delta_pip()}"
    assert [c for c in cmd if c.startswith("spark.sql.extensions=")] == [
        "spark.sql.extensions=com.example.Ext,io.delta.sql.DeltaSparkSessionExtension"
    ]
    assert cmd[-1].endswith(os.path.join("jobs", "export_index.py"))
    jars_cmd = printed_command(
        capsys, "--jars", ",".join(cached_jars(installed_build()) or ["delta-spark.jar"]), "--"
    )
    assert "--packages" not in jars_cmd  # the user's own Delta jars are used as they are


def test_submit_uses_spark_home_and_its_spark_version(capsys, tmp_path, monkeypatch):
    (tmp_path / "jars").mkdir()
    (tmp_path / "jars" / "spark-core_2.13-4.1.1.jar").write_bytes(b"")
    monkeypatch.setenv("SPARK_HOME", str(tmp_path))
    cmd = printed_command(capsys, "--")
    assert cmd[0] == str(tmp_path / "bin" / "spark-submit")
    assert (
        cmd[cmd.index("--packages") + 1] == f"io.delta:delta-spark_4.1_2.13:{installed_build().delta_version}"
    )


def test_submit_rejects_an_unknown_job_and_job_options_without_the_separator(capsys):
    assert submit_main(["--job", "nightly", "--", "--config", "x"]) == 2
    assert "--job must be one of embed, train, evaluate, export; got 'nightly'" in capsys.readouterr().err
    assert submit_main(["--master", "yarn", "--config", "conf/prod.yaml"]) == 2
    assert "the job's options (--config ...) go after `--`" in capsys.readouterr().err


def test_the_message_without_an_ivy_cache_names_the_jars_on_maven_central(monkeypatch, tmp_path):
    from vlclip_core.warehouse.delta_setup import DeltaBuild, missing_delta_message

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ivy2* there
    message = missing_delta_message(DeltaBuild("4.4.0", "4.2.0"), "4.1.1")
    assert "  --jars delta-spark_4.2_2.13-4.4.0.jar,delta-storage-4.4.0.jar" in message
    assert "https://repo1.maven.org/maven2/io/delta/delta-storage/4.4.0/delta-storage-4.4.0.jar" in message
    assert "this session runs Spark 4.1.1 but the installed pyspark is 4.2.0" in message
