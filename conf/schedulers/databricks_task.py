"""Databricks spark_python_task entry of a vlclip job: exit 3 (degraded) becomes a task value, not a failure.

Databricks fails a task on any non-zero exit and has no warning state, so `databricks_job.json` runs the
jobs through this file: `embed <job options>` runs jobs/embed_catalog.py's main in the cluster's Spark
session (Delta is built in there) and sets the task value `degraded` ("true"/"false") and `message`; an
If/else task then routes a degraded run to `flag <message>`, which fails on purpose so the job run ends
"Succeeded with failures" with the reason on that task. Exit 1 stays a failed task.
"""

from __future__ import annotations

import sys
from typing import List

EXIT_DEGRADED = 3


def set_task_value(key: str, value: str) -> None:
    from databricks.sdk.runtime import dbutils  # present on Databricks Runtime 13+

    dbutils.jobs.taskValues.set(key=key, value=value)


def run_job(name: str, argv: List[str]) -> int:
    from jobs import embed_catalog, evaluate, export_index, train_clip

    mains = {
        "embed": embed_catalog.main,
        "train": train_clip.main,
        "evaluate": evaluate.main,
        "export": export_index.main,
    }
    code = mains[name](argv)
    set_task_value("degraded", "true" if code == EXIT_DEGRADED else "false")
    if code == EXIT_DEGRADED:
        set_task_value("message", "vlclip run degraded: see the embed_catalog task's output")
        return 0
    return code


def main(argv: List[str]) -> int:
    if argv[:1] == ["flag"]:
        print(" ".join(argv[1:]) or "vlclip run degraded", file=sys.stderr)
        return 1
    return run_job(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
