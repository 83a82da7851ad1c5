"""A run's failure and fallback thresholds: which are breached by its counts (job.thresholds)."""

from __future__ import annotations

import dataclasses
from typing import Dict, List

from vlclip_core.config import ThresholdsConfig


class RunThresholdError(RuntimeError):
    """The run breached job.thresholds with on_breach=fail: its embeddings were not merged."""


def breaches(cfg: ThresholdsConfig, seen: int, selected: int, outcomes: Dict[str, int]) -> List[str]:
    """Each breached threshold as 'what: count/total (share) > limit', from a run's outcome counts."""
    found = []
    embedded = outcomes.get("embedded", 0)
    skipped = outcomes.get("skipped_failed_image", 0)  # its image failed for good: a decode failure
    stage_failures = {
        f.name: outcomes.get(f"failed_{f.name}", 0) + (skipped if f.name == "decode" else 0)
        for f in dataclasses.fields(cfg.max_failed)
        if f.name not in ("catalog", "any")
    }
    every_stage = skipped + sum(
        v for k, v in outcomes.items() if k.startswith("failed_") and k != "failed_catalog"
    )
    failed = dict(stage_failures, any=every_stage, catalog=outcomes.get("failed_catalog", 0))
    for name, count in failed.items():
        total = seen if name == "catalog" else selected
        found += _over(f"failed at {name}", count, total, getattr(cfg.max_failed, name), cfg.min_items)
    fallbacks = {
        "grounding": outcomes.get("embedded_ungrounded", 0),
        "enrichment": outcomes.get("embedded_text_fallback", 0),
        "llm_error": outcomes.get("embedded_llm_error", 0),
    }
    for name, count in fallbacks.items():
        found += _over(f"{name} fallback", count, embedded, getattr(cfg.max_fallback, name), cfg.min_items)
    return found


def _over(what: str, count: int, total: int, limit: float, min_items: int) -> List[str]:
    if total < max(min_items, 1) or count / total <= limit:
        return []
    return [f"{what}: {count}/{total} ({count / total:.0%}) > {limit:.0%}"]
