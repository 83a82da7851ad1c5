"""The one-screen run summary printed at the end of a job."""

from __future__ import annotations

from vlclip_core.pipeline.progress import format_duration


def format_summary(report) -> str:
    """Render a RunReport as a short block of text for the job's stdout."""
    took = (report.finished_at - report.started_at).total_seconds() if report.finished_at else 0.0
    lines = [
        f"vlclip run {report.run_id} — {report.status} "
        f"({report.mode}{', resumed' if report.resumed else ''}) in {format_duration(took)}",
        f"  model_version   {report.model_version}",
        f"  items           seen {report.items_seen}, invalid {report.items_invalid}, "
        f"selected {report.items_selected}, embedded {report.items_embedded}, failed {report.items_failed}, "
        f"removed {report.items_removed}, skipped {report.items_skipped} (image failed for good recently)",
        f"  model calls     detector items {report.detector_calls}, llm requests {report.llm_calls}",
    ]
    phases = [f"{k} {v:.1f}s" for k, v in report.phase_seconds.items()]
    stages = [f"{k} {v:.1f}s" for k, v in report.stage_seconds.items()]
    rates = [f"{k} {v:.1f}/s" for k, v in report.stage_items_per_s.items() if v]
    lines.append("  phase seconds   " + ", ".join(phases))
    lines.append("  stage seconds   " + ", ".join(stages))
    if rates:
        lines.append("  items/s (busy)  " + ", ".join(rates))
    if report.outcome_counts:
        outcomes = ", ".join(f"{k}={v}" for k, v in sorted(report.outcome_counts.items()))
        lines.append(f"  outcomes        {outcomes}")
    if report.error_counts:
        errors = ", ".join(f"{k}={v}" for k, v in sorted(report.error_counts.items()))
        lines.append(f"  errors          {errors}")
    if report.message:
        lines.append(f"  message         {report.message}")
    lines += [f"  table {name:<17} {ref}" for name, ref in report.tables.items()]
    return "\n".join(lines)
