"""Spark session with the Delta Lake extension: reuse the one spark-submit made, or start a local one."""

from __future__ import annotations

import logging
import os
import sys

from vlclip_core.config import SparkConfig

log = logging.getLogger(__name__)

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

# Local sessions only (under spark-submit the session is the user's; see README). PySpark 4 records the
# Python call site of every Column and DataFrame call for error messages, at ~5 JVM round trips a call:
# a few hundred ms of a no-op run's driver time.
LOCAL_DEFAULTS = {
    "spark.python.sql.dataFrameDebugging.enabled": "false",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.memory": "2g",
    "spark.sql.session.timeZone": "UTC",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.ui.showConsoleProgress": "false",
}


def get_spark(cfg: SparkConfig):
    """Return the active session (spark-submit) or build one with Delta from `cfg`.

    Under spark-submit, pass the Delta package there (see README); locally the Delta jars are
    resolved through `configure_spark_with_delta_pip` (Ivy cache, warmed by `make install`).
    """
    from pyspark.sql import SparkSession

    keep_py4j_connections_across_fork()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(cfg.app_name)
    if cfg.master:
        builder = builder.master(cfg.master)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python workers match the driver
        for key, value in LOCAL_DEFAULTS.items():
            builder = builder.config(key, value)
    for key, value in {**DELTA_SQL_CONF, **cfg.conf}.items():
        builder = builder.config(key, str(value))
    if _delta_jars_missing():
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info("spark session %s (master %s)", session.version, session.sparkContext.master)
    return session


def _delta_jars_missing() -> bool:
    """True unless spark-submit already put the Delta jars on the classpath."""
    submitted = os.environ.get("PYSPARK_SUBMIT_ARGS", "") + os.environ.get("SPARK_SUBMIT_OPTS", "")
    return "delta-spark" not in submitted and "io.delta" not in submitted


def keep_py4j_connections_across_fork() -> None:
    """Stop forked children from shutting down the driver's py4j sockets (once per process).

    py4j keeps one connection per Python thread and closes it from a thread-local finalizer when the
    thread ends. A child forked with Python code to run before exec (subprocess with preexec_fn, as
    ray.init starts its processes) drops the thread-locals of every thread but the forking one, so
    the child ran those finalizers and shut down sockets it shares with the driver: the JVM then
    reset the driver's connections (py4j logged "Connection reset" and reconnected). The finalizer
    now closes a connection only in the process that made it.
    """
    from py4j import clientserver

    finalizer = clientserver.ThreadLocalConnectionFinalizer
    if getattr(finalizer, "_vlclip_owner_pid", None) is not None:
        return
    close = finalizer.__del__

    def close_in_owner(self) -> None:
        if os.getpid() == finalizer._vlclip_owner_pid:
            close(self)

    finalizer._vlclip_owner_pid = os.getpid()
    finalizer.__del__ = close_in_owner
