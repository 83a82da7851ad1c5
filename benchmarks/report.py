"""The benchmark report: results.json with every figure and the machine, and the printed table."""

from __future__ import annotations

import json
import os
from typing import Dict, List


def write_json(results: Dict[str, object], out_dir: str) -> str:
    """Write <out_dir>/results.json atomically (a crash mid-run leaves the previous complete file)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2, sort_keys=False, default=_jsonable)
    os.replace(tmp, path)
    return path


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def headline(figure: str, stats: dict, unit: str = "", goal: str = "", met=None) -> dict:
    """One row of the printed table: a figure's median and min-max (or a ratio's), its goal and verdict."""
    if "of_medians" in stats:
        stats = {"median": stats["of_medians"], "min": stats["paired"]["min"], "max": stats["paired"]["max"]}
    return {
        "figure": figure,
        "median": stats.get("median"),
        "min": stats.get("min"),
        "max": stats.get("max"),
        "unit": unit,
        "goal": goal,
        "met": met,
    }


def at_least(stats: dict, goal: float):
    value = stats.get("of_medians")
    return None if value is None else value >= goal


def at_most(stats: dict, goal: float):
    value = stats.get("of_medians")
    return None if value is None else value <= goal


def table_lines(results: Dict[str, object]) -> List[str]:
    """A markdown table: one row per headline figure of each comparison, failed ones with their error."""
    lines = ["| comparison | figure | median | min–max | goal | met |", "|---|---|---|---|---|---|"]
    for name, outcome in results["comparisons"].items():
        if outcome["status"] != "ok":
            lines.append(f"| {name} | FAILED: {_short(outcome.get('error', ''))} | | | | |")
            continue
        for row in outcome["headline"]:
            lines.append(
                f"| {name} | {row['figure']} | {_num(row['median'], row['unit'])} | "
                f"{_num(row['min'])}–{_num(row['max'])} | {row['goal']} | {_verdict(row['met'])} |"
            )
    return lines


def _num(value, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{text} {unit}".strip()


def _verdict(met) -> str:
    return "" if met is None else ("yes" if met else "NO")


def _short(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")[:120]
