"""A run's life across attempts: stale runs abandoned instead of resumed, committed runs' rows completed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Optional

from vlclip_core import storage
from vlclip_core.run.report import RunReport, record_run
from vlclip_core.run.state import ABANDONED, COMMITTED, RunState, open_run, utcnow
from vlclip_core.warehouse.tables import Tables

log = logging.getLogger(__name__)

COMMITTED_STATUSES = ("succeeded", "degraded")


class RunSupersededError(RuntimeError):
    """A run older than the last committed run of its model_version: resuming it could revert items."""


def newest_committed_start(tables: Tables, model_version: str) -> Optional[dt.datetime]:
    """When the newest committed run of this model_version started (None when there is none)."""
    from pyspark.sql import functions as F

    row = (
        tables.read("runs")
        .where((F.col("model_version") == model_version) & F.col("status").isin(*COMMITTED_STATUSES))
        .agg(F.max(F.unix_micros("run_started_at")).alias("newest"))
        .first()
    )
    micros = row["newest"] if row else None
    if micros is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=int(micros))


def superseded_by(tables: Tables, state: RunState) -> Optional[dt.datetime]:
    """The start of a later run of the same model_version that committed, if any (then `state` is stale)."""
    newest = newest_committed_start(tables, state.manifest["model_version"])
    return newest if newest is not None and newest > state.started_at else None


def abandon(spark, tables: Tables, state: RunState, reason: str) -> None:
    """Mark a run abandoned for good (never resumed, never merged) and record it in `runs`."""
    if state.status == COMMITTED:
        raise ValueError(f"run {state.run_id} is committed; only an unfinished run can be abandoned")
    log.warning("abandoning run %s: %s", state.run_id, reason)
    state.save(status=ABANDONED, last_error=reason)
    report = RunReport(
        run_id=state.run_id,
        mode=state.manifest["mode"],
        model_version=state.manifest["model_version"],
        config_hash=state.manifest.get("config_hash", ""),
        status=ABANDONED,
        started_at=state.started_at,
        run_started_at=state.started_at,
        finished_at=utcnow(),
        message=reason[:2000],
    )
    record_run(spark, tables, state, report)


def save_committed(state: RunState, report: RunReport) -> None:
    """COMMITTED and the run's report in one manifest write: a later run can write its row from it."""
    state.save(status=COMMITTED, report=dataclasses.asdict(report), runs_row_done=False)


def record_committed(spark, tables: Tables, state: RunState, report: RunReport) -> None:
    record_run(spark, tables, state, report)
    state.save(runs_row_done=True)


def complete_committed_runs(spark, tables: Tables, staging: str) -> int:
    """Write the runs row of every committed run whose row was not confirmed (its driver failed or
    was killed after the commit); returns how many were completed."""
    done = 0
    for name in storage.list_dir(staging):
        state = open_run(staging, name) if not name.startswith("_") else None
        if state is None or state.status != COMMITTED or state.manifest.get("runs_row_done", True):
            continue
        log.warning("run %s committed but its runs row was not confirmed: writing it now", state.run_id)
        record_committed(spark, tables, state, report_from_manifest(state))
        done += 1
    return done


def report_from_manifest(state: RunState) -> RunReport:
    values = dict(state.manifest["report"])
    for key in ("started_at", "finished_at", "run_started_at"):
        if isinstance(values.get(key), str):
            values[key] = dt.datetime.fromisoformat(values[key])
    fields = {f.name for f in dataclasses.fields(RunReport)}
    return RunReport(**{k: v for k, v in values.items() if k in fields})
