"""Where a run's time goes: each stage's busy seconds and its actor pool's idle seconds, over repeats."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping

from benchmarks.measure import spread
from benchmarks.report import headline

# Keys of RunReport.pipeline_stats[stage] the comparisons report (a missing key is left out).
POOL_KEYS = ("busy_s", "idle_s", "actors_max", "actor_seconds", "first_batch_after_s")


def run_stages(report) -> Dict[str, Dict[str, float]]:
    """{stage: {"busy_s": ..}} of one vlclip run, with its pool's idle_s, actors_max and actor_seconds
    where the report has pipeline_stats; busy seconds fall back to report.stage_seconds."""
    out = {name: {"busy_s": float(s)} for name, s in (getattr(report, "stage_seconds", None) or {}).items()}
    for name, values in (getattr(report, "pipeline_stats", None) or {}).items():
        values = dataclasses.asdict(values) if dataclasses.is_dataclass(values) else dict(values)
        out.setdefault(name, {}).update({k: values[k] for k in POOL_KEYS if values.get(k) is not None})
    return out


def busy_only(stage_seconds: Mapping[str, float]) -> Dict[str, Dict[str, float]]:
    """The same shape for a run that only knows each stage's busy seconds (the naive job)."""
    return {name: {"busy_s": float(s)} for name, s in stage_seconds.items()}


def stage_figures(runs: List[dict]) -> Dict[str, Dict[str, dict]]:
    """{stage: {key: spread over the runs}} of the runs' "stages" entries."""
    out: Dict[str, Dict[str, dict]] = {}
    for run in runs:
        for name, values in (run.get("stages") or {}).items():
            for key, value in values.items():
                out.setdefault(name, {}).setdefault(key, []).append(value)
    return {name: {key: spread(v) for key, v in values.items()} for name, values in out.items()}


def stage_rows(side: str, figures: Dict[str, Dict[str, dict]]) -> List[dict]:
    """Headline rows: each stage's busy seconds, and its pool's idle seconds and when its first batch
    began (after the pipeline started) where they were measured."""
    rows = []
    for name, stats in figures.items():
        rows.append(headline(f"{side} busy s: {name}", stats["busy_s"], "s"))
        if "idle_s" in stats:
            rows.append(headline(f"{side} pool idle s: {name}", stats["idle_s"], "s"))
        if "first_batch_after_s" in stats:
            rows.append(headline(f"{side} first batch after s: {name}", stats["first_batch_after_s"], "s"))
    return rows
