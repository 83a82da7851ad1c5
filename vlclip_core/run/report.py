"""The runs row: what one run did (RunReport), written once per run, also after a failure."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Optional

from vlclip_core.run.state import FAILED, RunState, utcnow
from vlclip_core.run.thresholds import RunThresholdError
from vlclip_core.warehouse.tables import Tables, literal_row, table_schema, write_run

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What one run did: the row it appends to the `runs` table."""

    run_id: str
    mode: str
    model_version: str
    config_hash: str
    status: str = "running"
    started_at: object = None  # this attempt
    run_started_at: object = None  # the run's first attempt (the watermark of its writes)
    finished_at: object = None
    items_seen: int = 0
    items_invalid: int = 0  # catalog rows rejected before selection (null/duplicate id, no image_uri)
    items_selected: int = 0
    items_embedded: int = 0
    items_failed: int = 0
    items_removed: int = 0
    items_skipped: int = 0  # not fetched: their image failed for good recently (failed_images)
    detector_calls: int = 0
    llm_calls: int = 0
    phase_seconds: Dict[str, float] = field(default_factory=dict)  # select / pipeline / commit (driver)
    stage_seconds: Dict[str, float] = field(default_factory=dict)  # busy seconds of each pipeline stage
    stage_items_per_s: Dict[str, float] = field(default_factory=dict)
    # per stage: its pool, actors, model load, busy / actor / idle seconds (pipeline.heartbeat.pool_stats);
    # in the report and the log, not in the runs row
    pipeline_stats: Dict[str, dict] = field(default_factory=dict)
    error_counts: Dict[str, int] = field(default_factory=dict)
    outcome_counts: Dict[str, int] = field(default_factory=dict)
    message: Optional[str] = None
    resumed: bool = False
    tables: Dict[str, str] = field(default_factory=dict)


def record_failure(spark, tables: Tables, state: RunState, report: RunReport, err: BaseException) -> None:
    report.status = "failed"
    report.finished_at = utcnow()
    report.message = f"{type(err).__name__}: {err}"[:2000]
    state.save(
        last_error=report.message, **({"status": FAILED} if isinstance(err, RunThresholdError) else {})
    )
    try:
        record_run(spark, tables, state, report)
    except Exception as write_err:  # noqa: BLE001 - the original failure is what the caller must see
        log.error("could not record the failed run in the runs table: %s", write_err)


def record_run(spark, tables: Tables, state: RunState, report: RunReport) -> None:
    """Write the run's row to `runs`. The manifest notes the attempt *before* the write, so a run
    whose earlier attempt may have written a row MERGEs (one row per run) and a fresh run appends."""
    may_exist = bool(state.manifest.get("runs_row_written"))
    if not may_exist:
        state.save(runs_row_written=True)
    write_run(tables, runs_row(spark, report), may_exist)


def runs_row(spark, report: RunReport):
    schema = table_schema(spark, "runs")
    return literal_row(spark, schema, {name: getattr(report, name) for name in schema.names})
