"""`make cluster-demo`: a Spark standalone master + worker and a Ray head as separate processes.

The job runs on them with spark-submit.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

from vlclip_core.logs import setup_logging
from vlclip_core.warehouse.spark_session import DELTA_SQL_CONF

log = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/ -> root
START_TIMEOUT_S = 120.0


@dataclass
class ClusterRun:
    """One spark-submit of the job on the started cluster, and where its traces are."""

    returncode: int
    stdout: str
    stderr: str
    spark_master: str
    ray_address: str
    spark_work_dir: str
    ray_logs_dir: str  # a copy of the Ray head's session logs
    seconds: float
    apps: List[str] = field(default_factory=list)  # Spark application dirs the worker ran executors for
    ray_actors: List[str] = field(default_factory=list)  # actor classes the Ray head's workers hosted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def base_env(**extra: str) -> Dict[str, str]:
    """The environment of every cluster process: loopback Spark, offline hub, this Python everywhere."""
    paths = [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != REPO]
    env = dict(
        os.environ,
        SPARK_LOCAL_IP="127.0.0.1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        RAY_USAGE_STATS_ENABLED="0",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join(paths),
        SPARK_HOME=spark_home(),
    )
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


class Service:
    """A long-running process in its own session (stopping it takes its children along), logging to a file."""

    def __init__(
        self, name: str, cmd: List[str], log_path: str, env: Dict[str, str], stop_grace_s: float = 20.0
    ):
        self.name, self.log_path, self.stop_grace_s = name, log_path, stop_grace_s
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
        log.info("started %s (pid %d), log %s", name, self.proc.pid, log_path)

    def wait_for(self, pattern: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the log matches `pattern`; fail with the log's tail if the process dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if re.search(pattern, self.log_text()):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(
            f"{self.name} did not get ready ({pattern!r}; exit {self.proc.poll()}):\n"
            f"{self.log_text()[-3000:]}"
        )

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL what is left after the grace period."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(self.stop_grace_s)
        except subprocess.TimeoutExpired:
            log.info("%s did not stop in %.0fs: killing its process group", self.name, self.stop_grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def services() -> Iterator[List[Service]]:
    """A list to start services into; all of them are stopped, last first, however the block ends."""
    started: List[Service] = []
    try:
        yield started
    finally:
        for service in reversed(started):
            service.stop()


def start_spark_standalone(started: List[Service], work: str, cores: int = 2, memory: str = "1500m") -> str:
    """A master and one worker (`cores`, `memory`) on loopback; returns the master URL."""
    spark_class = os.path.join(spark_home(), "bin", "spark-class")
    port = free_port()
    master = Service(
        "spark master",
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(free_port()),
        ],
        os.path.join(work, "spark-master.log"),
        base_env(),
    )
    started.append(master)
    master.wait_for(r"I have been elected leader")
    url = f"spark://127.0.0.1:{port}"
    worker = Service(
        "spark worker",
        [
            spark_class,
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--webui-port",
            str(free_port()),
            "--cores",
            str(cores),
            "--memory",
            memory,
            "--work-dir",
            spark_work_dir(work),
            url,
        ],
        os.path.join(work, "spark-worker.log"),
        base_env(),
    )
    started.append(worker)
    worker.wait_for(r"Successfully registered with master")
    return url


def spark_work_dir(work: str) -> str:
    return os.path.join(work, "spark-worker-work")


def ray_auth_env() -> Dict[str, str]:
    """Ray 2.60 clusters started with `ray start` require token authentication: a fresh token that the
    head and the driver share (instead of the one `ray start` would keep in ~/.ray/auth_token)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def start_ray_head(
    started: List[Service],
    temp_dir: str,
    auth: Dict[str, str],
    num_cpus: float = 2,
    object_store_bytes: int = 400_000_000,
) -> str:
    """`ray start --head --block` with its own ports and temp dir; returns its GCS address."""
    port = free_port()
    ports = {
        flag: free_port()
        for flag in (
            "--node-manager-port",
            "--object-manager-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--metrics-export-port",
        )
    }
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--num-cpus",
        str(num_cpus),
        "--object-store-memory",
        str(object_store_bytes),
        "--temp-dir",
        temp_dir,
        "--include-dashboard",
        "false",
        "--disable-usage-stats",
    ] + [str(a) for kv in ports.items() for a in kv]
    # `ray start --block` outlives SIGTERM for long: its process group (GCS, raylet, workers)
    # is killed after 5 s
    head = Service(
        "ray head", cmd, os.path.join(temp_dir, "ray-start.log"), base_env(**auth), stop_grace_s=5.0
    )
    started.append(head)
    head.wait_for(r"Ray runtime started")
    return f"127.0.0.1:{port}"


def delta_packages() -> str:
    """The Delta Maven coordinates matching the installed delta-spark (resolved from the Ivy cache)."""
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    return configure_spark_with_delta_pip(SparkSession.Builder())._options["spark.jars.packages"]


def submit_command(master: str, job_args: List[str]) -> List[str]:
    """spark-submit of jobs/embed_catalog.py in client mode on `master`: one executor of 2 cores."""
    conf = {
        **DELTA_SQL_CONF,
        "spark.executor.memory": "1g",
        "spark.cores.max": "2",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.driver.host": "127.0.0.1",
        "spark.pyspark.python": sys.executable,
        "spark.sql.session.timeZone": "UTC",
        "spark.python.sql.dataFrameDebugging.enabled": "false",
    }
    return (
        [
            os.path.join(spark_home(), "bin", "spark-submit"),
            "--master",
            master,
            "--deploy-mode",
            "client",
            "--driver-memory",
            "1g",
            "--packages",
            delta_packages(),
        ]
        + [a for k, v in conf.items() for a in ("--conf", f"{k}={v}")]
        + [os.path.join(REPO, "jobs", "embed_catalog.py")]
        + job_args
    )


def cluster_overrides(staging_dir: str) -> List[str]:
    """The job settings that make it use the cluster: the session spark-submit made, the running Ray."""
    return [
        "--set",
        "spark.master=null",
        "--set",
        "ray.address=auto",
        "--set",
        f"warehouse.staging_dir={staging_dir}",
    ]


def run_on_cluster(work: str, job_args: List[str], timeout_s: float = 1800.0) -> ClusterRun:
    """Start the cluster, spark-submit the job with `job_args`, collect its traces, stop everything."""
    os.makedirs(work, exist_ok=True)
    ray_temp = tempfile.mkdtemp(prefix="vlray", dir="/tmp")  # Ray's socket paths must stay short
    try:
        with services() as started:
            master = start_spark_standalone(started, work)
            auth = ray_auth_env()
            address = start_ray_head(started, ray_temp, auth)
            staging = os.path.join(work, "shared", "staging")
            start = time.monotonic()
            returncode, stdout, stderr = submit(
                work,
                submit_command(master, job_args + cluster_overrides(staging)),
                base_env(RAY_ADDRESS=address, **auth),
                timeout_s,
            )
            seconds = time.monotonic() - start
            kept = os.path.join(work, "ray-logs")
            keep_ray_logs(os.path.join(ray_temp, "session_latest", "logs"), kept)
        return ClusterRun(
            returncode,
            stdout,
            stderr,
            master,
            address,
            spark_work_dir(work),
            kept,
            round(seconds, 1),
            applications(spark_work_dir(work)),
            ray_actors(kept),
        )
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)


def submit(work: str, cmd: List[str], env: Dict[str, str], timeout_s: float):
    """Run spark-submit with its output in <work>/driver.{out,err}; returns (exit code, stdout, stderr)."""
    out_path, err_path = os.path.join(work, "driver.out"), os.path.join(work, "driver.err")
    log.info("spark-submit running, driver log %s", err_path)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            returncode = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # spark-submit's JVM and the Python driver it started
            proc.wait()
            raise
    with (
        open(out_path, encoding="utf-8", errors="replace") as out,
        open(err_path, encoding="utf-8", errors="replace") as err,
    ):
        return returncode, out.read(), err.read()


def applications(work_dir: str) -> List[str]:
    """Application ids whose executors ran on the worker (each has an executor stderr there)."""
    return sorted(
        {
            os.path.basename(os.path.dirname(os.path.dirname(p)))
            for p in glob.glob(os.path.join(work_dir, "app-*", "*", "stderr"))
        }
    )


def ray_actors(logs_dir: str) -> List[str]:
    """Actor class names that the cluster's worker processes hosted (from their log headers)."""
    names = set()
    for path in glob.glob(
        os.path.join(logs_dir, "**", "worker-*.out"), recursive=True
    ):  # old/: exited workers
        with open(path, encoding="utf-8", errors="replace") as fh:
            # Ray Data names its pool actors MapWorker(MapBatches(<class>))
            names.update(re.findall(r":actor_name:(?:MapWorker\(MapBatches\()?(\w+)", fh.read()))
    return sorted(names)


def keep_ray_logs(logs_dir: str, dest: str) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    if os.path.isdir(logs_dir):
        shutil.copytree(logs_dir, dest, ignore=shutil.ignore_patterns("*.sock", "events"))


def demo_catalog(catalog: str, work: str, items: int) -> str:
    """The catalog itself, or a copy of its first `items` rows under <work>/catalog."""
    from vlclip_core.tools.sample_catalog import read_catalog, write_catalog

    if not items:
        return catalog
    return write_catalog(read_catalog(catalog).slice(0, items), os.path.join(work, "catalog"))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlclip_core.tools.cluster_demo", description=__doc__)
    parser.add_argument("--config", default="conf/tiny.yaml")
    parser.add_argument("--catalog", default="data/sample/catalog")
    parser.add_argument("--work", default="build/cluster-demo", help="logs, warehouse and shared staging")
    parser.add_argument("--items", type=int, default=60, help="the catalog's first N items (0: all)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    setup_logging("INFO")
    work = os.path.abspath(args.work)
    catalog = demo_catalog(os.path.abspath(args.catalog), work, args.items)
    job_args = [
        "--config",
        os.path.abspath(args.config),
        "--catalog",
        catalog,
        "--warehouse",
        os.path.join(work, "warehouse"),
    ] + [a for o in args.overrides for a in ("--set", o)]
    run = run_on_cluster(work, job_args)
    print(run.stdout[-4000:])
    print(
        f"spark-submit --master {run.spark_master} with Ray at {run.ray_address}: exit {run.returncode} in "
        f"{run.seconds}s; executors ran for {run.apps} on the worker; "
        f"Ray actors on the head: {run.ray_actors}"
    )
    if run.returncode:
        print(run.stderr[-4000:], file=sys.stderr)
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
