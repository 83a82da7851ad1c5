"""The one-screen run summary: every count of the report on its line, optional lines only when set."""

from __future__ import annotations

import datetime as dt

from vlclip_core.run.report import RunReport
from vlclip_core.run.summary import format_summary

START = dt.datetime(2026, 1, 2, 3, 0, 0, tzinfo=dt.timezone.utc)


def report(**changes) -> RunReport:
    values = dict(
        run_id="r-1",
        mode="incremental",
        model_version="mv-abc",
        config_hash="cfg",
        status="succeeded",
        started_at=START,
        finished_at=START + dt.timedelta(minutes=2, seconds=5),
        items_seen=12,
        items_invalid=2,
        items_selected=9,
        items_embedded=7,
        items_failed=1,
        items_removed=3,
        items_skipped=1,
        detector_calls=6,
        llm_calls=4,
        phase_seconds={"select": 1.26, "pipeline": 100.0, "commit": 20.04},
        stage_seconds={"decode": 2.0, "grounding": 50.5},
        tables={"embeddings": "delta.`/wh/embeddings`"},
    )
    values.update(changes)
    return RunReport(**values)


def test_summary_lists_counts_phases_and_tables():
    assert format_summary(report()).splitlines() == [
        "vlclip run r-1 — succeeded (incremental) in 2m05s",
        "  model_version   mv-abc",
        "  items           seen 12, invalid 2, selected 9, embedded 7, failed 1, removed 3, skipped 1 "
        "(image failed for good recently)",
        "  model calls     detector items 6, llm requests 4",
        "  phase seconds   select 1.3s, pipeline 100.0s, commit 20.0s",
        "  stage seconds   decode 2.0s, grounding 50.5s",
        "  table embeddings        delta.`/wh/embeddings`",
    ]


def test_optional_lines_appear_when_set_sorted_by_key():
    text = format_summary(
        report(
            status="failed",
            resumed=True,
            finished_at=None,
            stage_items_per_s={"decode": 40.0, "grounding": 0.0, "clip": 12.26},
            outcome_counts={"embedded": 7, "failed_decode": 1},
            error_counts={"http_404": 1, "bad_image": 2},
            message="RunThresholdError: too many failures",
        )
    )
    lines = text.splitlines()
    assert lines[0] == "vlclip run r-1 — failed (incremental, resumed) in 0m00s"
    assert "  items/s (busy)  decode 40.0/s, clip 12.3/s" in lines  # a stage without items is left out
    assert "  outcomes        embedded=7, failed_decode=1" in lines
    assert "  errors          bad_image=2, http_404=1" in lines
    assert lines[-2] == "  message         RunThresholdError: too many failures"
