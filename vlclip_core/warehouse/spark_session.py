"""Spark session with the Delta Lake extension: reuse the one spark-submit made, or start a local one."""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from vlclip_core.config import SparkConfig
from vlclip_core.warehouse.delta_setup import (
    DELTA_API_CLASS,
    DELTA_SQL_CONF,
    DeltaSetupError,
    installed_build,
    missing_delta_message,
)

log = logging.getLogger(__name__)

# open-source Delta's log classes need its storage layer at run time (delta-storage, a jar of its own)
OSS_DELTA_LOG_CLASS = "org.apache.spark.sql.delta.DeltaLog"
DELTA_STORAGE_CLASS = "io.delta.storage.LogStore"

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
    """Return the active session or build one with Delta from `cfg`; raise DeltaSetupError without Delta.

    Under spark-submit the JVM is already running: pass the Delta package there (`vlclip submit` does,
    see README); locally the Delta jars are resolved through `configure_spark_with_delta_pip` (Ivy
    cache, warmed by `make install`).
    """
    from pyspark.sql import SparkSession

    keep_py4j_connections_across_fork()
    session = SparkSession.getActiveSession()
    if session is None:
        session = _build_session(cfg)
    check_delta_loaded(session)
    return session


def _build_session(cfg: SparkConfig):
    from pyspark.sql import SparkSession

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


def check_delta_loaded(session) -> None:
    """Raise DeltaSetupError, naming the spark-submit flags to add, unless the Delta classes load.

    Under spark-submit the classpath is fixed when the JVM starts, before any Python runs, so a
    missing `--packages`/`--jars` can only be reported, not repaired, here.
    """
    missing = [name for name in _required_delta_classes(session) if not _class_loads(session, name)]
    if missing:
        raise DeltaSetupError(missing_delta_message(installed_build(), session.version))


def _required_delta_classes(session) -> list:
    if _class_loads(session, OSS_DELTA_LOG_CLASS):
        return [DELTA_API_CLASS, DELTA_STORAGE_CLASS]
    return [DELTA_API_CLASS]  # a Spark whose Delta is built in (Databricks) ships its own storage layer


def _class_loads(session, name: str) -> bool:
    """True when py4j resolves `name` to a class of the session's JVM (what Delta's Python API does)."""
    from py4j.java_gateway import JavaClass

    node = session.sparkContext._jvm
    for part in name.split("."):
        node = getattr(node, part)
    return isinstance(node, JavaClass)


def _delta_jars_missing() -> bool:
    """True when this process will start the JVM and nobody asked for the Delta jars yet.

    Under spark-submit (PYSPARK_GATEWAY_PORT set) the JVM and its classpath exist already.
    """
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        return False
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


TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"


USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


def idempotent_session(spark, app_id: str, version: int, metadata: Optional[str] = None):
    """A child session whose Delta writes (appends and MERGE alike) carry the transaction id
    (app_id, version): a write to a table that already recorded this version or a later one for
    app_id is skipped. A child of its own, so no other write of the process is tagged; it shares the
    parent's SparkContext, catalog and cache, and copies its runtime SQL settings. `metadata` goes
    into each commit's userMetadata (shown by DESCRIBE HISTORY), after the parent's own if it has one."""
    child = spark.newSession()
    for key, value in spark.conf.getAll.items():
        if key not in (TXN_APP_ID, TXN_VERSION) and spark.conf.isModifiable(key):
            child.conf.set(key, value)
    child.conf.set(TXN_APP_ID, app_id)
    child.conf.set(TXN_VERSION, str(int(version)))
    if metadata:
        own = spark.conf.get(USER_METADATA, None)  # an operator's tag of every commit is kept first
        child.conf.set(USER_METADATA, f"{own} | {metadata}" if own else metadata)
    return child
