"""Airflow DAG for the nightly vlclip run: `vlclip submit` of the embedding job, then the ANN index export.

Copy into the DAGs folder of an Airflow whose workers have vlclip installed (the `vlclip` command on
PATH, or VLCLIP_BIN) and Java 17. Exit codes of the embedding job as the operator sees them:
  0  succeeded            -> task `embed_catalog` success (green)
  1  failed               -> task failed (red), `export_index` upstream_failed, the DAG run failed
  3  degraded (merged, a job.thresholds limit breached with on_breach=degraded)
                          -> task skipped (pink) through skip_on_exit_code=3, with the line
                             "vlclip: run degraded: <reason>" at the end of its log; `export_index`
                             still runs (trigger_rule none_failed: the embeddings were merged), the DAG
                             run succeeds, and on_skipped_callback logs a warning (put an alert there).
Settings come from the environment of the scheduler and workers (defaults below): VLCLIP_SPARK_OPTIONS
(spark-submit options), VLCLIP_CONFIG, VLCLIP_EMBED_OPTIONS and VLCLIP_EXPORT_OPTIONS (job options),
VLCLIP_WORKDIR (working directory of the commands).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.x
    from airflow import DAG
    from airflow.operators.bash import BashOperator

log = logging.getLogger(__name__)

VLCLIP = os.environ.get("VLCLIP_BIN", "vlclip")
SPARK_OPTIONS = os.environ.get("VLCLIP_SPARK_OPTIONS", "--master yarn --deploy-mode client")
CONFIG = os.environ.get("VLCLIP_CONFIG", "/opt/vlclip/conf/prod.yaml")
EMBED_OPTIONS = os.environ.get("VLCLIP_EMBED_OPTIONS", "")
EXPORT_OPTIONS = os.environ.get("VLCLIP_EXPORT_OPTIONS", "")
WORKDIR = os.environ.get("VLCLIP_WORKDIR") or None
EXIT_DEGRADED = 3


def warn_degraded(context) -> None:
    """The embedding run merged but breached a threshold: the place for an alert (mail, chat, pager)."""
    log.warning(
        "vlclip run degraded in %s (task %s): see the last lines of its log",
        context["dag_run"].run_id,
        context["task_instance"].task_id,
    )


with DAG(
    dag_id="vlclip_nightly",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # the job also holds a run lock; this keeps Airflow from queueing a second one
    default_args={"retries": 0},
    tags=["vlclip"],
) as dag:
    embed = BashOperator(
        task_id="embed_catalog",
        bash_command=f"{VLCLIP} submit {SPARK_OPTIONS} -- --config {CONFIG} {EMBED_OPTIONS}",
        skip_on_exit_code=EXIT_DEGRADED,
        on_skipped_callback=warn_degraded,
        cwd=WORKDIR,
        execution_timeout=timedelta(hours=8),
    )
    export = BashOperator(
        task_id="export_index",
        bash_command=f"{VLCLIP} submit --job export {SPARK_OPTIONS} -- --config {CONFIG} {EXPORT_OPTIONS} "
        "build",
        trigger_rule="none_failed",
        skip_on_exit_code=None,  # any non-zero exit of the export is a failure
        cwd=WORKDIR,
        execution_timeout=timedelta(hours=2),
    )
    embed >> export
