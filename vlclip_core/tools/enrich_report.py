"""Enrichment quality report: run the LLM agent on catalog items, measure what it keeps, show it."""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import statistics
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

from vlclip_core import schema as S
from vlclip_core.config import VlclipConfig, load_config
from vlclip_core.llm import checks
from vlclip_core.llm.agent import STATUS_FALLBACK, EnrichmentAgent, EnrichmentResult, clean_attributes
from vlclip_core.logs import setup_logging

log = logging.getLogger(__name__)

ACCEPTED = ("ok", "refined")
_STEP_OF_STATUS = {"ok": "summarise", "refined": "refine"}
_PAGE_CSS = (
    "body{font-family:sans-serif;margin:16px;background:#f4f4f4;color:#222}"
    "table{border-collapse:collapse;background:#fff;width:100%}"
    "td,th{border:1px solid #ddd;padding:6px 8px;vertical-align:top;font-size:13px;text-align:left}"
    "th{background:#eee}.st-ok,.st-refined{color:#176f2c;font-weight:bold}.st-fallback{color:#b35c00;"
    "font-weight:bold}.reason{color:#777;font-size:12px}.attrs{color:#555;font-size:12px}"
)


class TimedBackend:
    """Wraps a ChatBackend: counts calls, generated tokens (the backend's tokenizer, else words) and time."""

    def __init__(self, backend):
        self.backend = backend
        self.calls, self.tokens, self.seconds = 0, 0, 0.0
        self.replies: List[Dict[str, str]] = []

    def chat(self, conversations):
        start = time.perf_counter()
        replies = self.backend.chat(conversations)
        self.seconds += time.perf_counter() - start
        for conversation, reply in zip(conversations, replies):
            self.calls += 1
            if isinstance(reply, str):
                self.tokens += self._count_tokens(reply)
                self.replies.append({"prompt": conversation[-1]["content"], "reply": reply})
        return replies

    def _count_tokens(self, text: str) -> int:
        tokenizer = getattr(self.backend, "tokenizer", None)
        if tokenizer is None:
            return len(text.split())
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def read_items(spark, config: VlclipConfig, limit: int) -> List[Dict[str, Any]]:
    """The first `limit` items (by id) of the profile's catalog: Delta, Parquet or metastore table."""
    from vlclip_core.selection.catalog import normalise, read_catalog

    rows = normalise(read_catalog(spark, config.catalog)).orderBy(S.ITEM_ID).limit(limit).collect()
    return [_item(row.asDict()) for row in rows]


def _item(row: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "item_id": row[S.ITEM_ID],
        "title": row.get(S.TITLE) or "",
        "description": row.get(S.DESCRIPTION) or "",
        "product_type": row.get(S.PRODUCT_TYPE) or "",
        "attributes": dict(row.get(S.ATTRIBUTES) or {}),
    }


def enrich_all(agent: EnrichmentAgent, items: List[Dict[str, Any]], batch_size: int, sink) -> List[Any]:
    """Outcomes of `items`, batch by batch; each batch is also written to `sink` (items.jsonl) at once,
    so a run cut short by a timeout keeps what it enriched."""
    outcomes: List[Any] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        done = agent.enrich(chunk)
        for item, result in zip(chunk, done):
            sink.write(json.dumps({**item, "result": _result_dict(result)}) + "\n")
        sink.flush()
        outcomes += done
        log.info("enriched %d/%d items", len(outcomes), len(items))
    return outcomes


def accepted_metrics(agent: EnrichmentAgent, items: Sequence[dict], results: Sequence[Any]) -> Dict[str, Any]:
    """Echo and repetition rates (the agent's own checks), attribute coverage and length of accepted texts."""
    pairs = [(i, r) for i, r in zip(items, results) if _accepted(r)]
    if not pairs:
        return {"accepted": 0}
    failures = [_recheck(agent, r) for _, r in pairs]
    lengths = [checks.word_count(r.text) for _, r in pairs]
    return {
        "accepted": len(pairs),
        "echo_rate": _share(failures, "prompt_echo"),
        "repetition_rate": _share(failures, "repetition"),
        "over_length_rate": _share(failures, "over_length"),
        "attribute_coverage": statistics.mean(_coverage(i, r.text) for i, r in pairs),
        "words_median": statistics.median(lengths),
        "words_max": max(lengths),
    }


def _accepted(result: Any) -> bool:
    return isinstance(result, EnrichmentResult) and result.status in ACCEPTED


def _recheck(agent: EnrichmentAgent, result: EnrichmentResult) -> List[str]:
    instructions = checks.instructions_of(agent.prompts.messages(_STEP_OF_STATUS[result.status]))
    return [checks.check_name(reason) for reason in checks.run_checks(result.text, result.text, instructions)]


def _share(failures: List[List[str]], name: str) -> float:
    return sum(name in names for names in failures) / len(failures)


def _coverage(item: dict, text: str) -> float:
    values = list(clean_attributes(item["attributes"]).values())
    if not values:
        return 1.0
    haystack = " ".join(checks.words(text))
    return sum(" ".join(checks.words(v)) in haystack for v in values) / len(values)


def build_report(agent, timed: TimedBackend, items, results, seconds: float) -> Dict[str, Any]:
    """The figures of one report run (JSON-serialisable)."""
    statuses = Counter(r.status if isinstance(r, EnrichmentResult) else "error" for r in results)
    per_check = Counter(
        checks.check_name(reason) for r in results if isinstance(r, EnrichmentResult) for reason in r.checks
    )
    return {
        "items": len(items),
        "status_counts": dict(statuses),
        "check_failures": dict(per_check.most_common()),
        **accepted_metrics(agent, items, results),
        "llm_calls": timed.calls,
        "generated_tokens": timed.tokens,
        "llm_seconds": round(timed.seconds, 1),
        "tokens_per_s": round(timed.tokens / timed.seconds, 2) if timed.seconds else None,
        "items_per_s": round(len(items) / seconds, 3) if seconds else None,
    }


def render_html(report: Dict[str, Any], items, results, sample: int) -> str:
    """A page with the figures and, for the first `sample` items, catalog text beside enriched text."""
    figures = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                      for k, v in report.items())
    rows = "".join(_html_row(item, result) for item, result in list(zip(items, results))[:sample])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>vlclip enrichment report</title>"
        f"<style>{_PAGE_CSS}</style></head><body><h1>Enrichment report</h1><table>{figures}</table>"
        "<h2>Catalog text and enriched text</h2><table><tr><th>item</th><th>catalog</th>"
        f"<th>enriched</th></tr>{rows}</table></body></html>"
    )


def _html_row(item: dict, result: Any) -> str:
    esc = html.escape
    attrs = "; ".join(f"{k}: {v}" for k, v in clean_attributes(item["attributes"]).items())
    catalog = f"<b>{esc(item['title'])}</b><br>{esc(item['description'])}"
    catalog += f"<div class='attrs'>{esc(attrs)}</div>"
    if isinstance(result, EnrichmentResult):
        status, text, reason = result.status, result.text, result.reason or ""
    else:
        status, text, reason = "error", "", str(getattr(result, "message", result))
    enriched = f"<span class='st-{esc(status)}'>{esc(status)}</span> {esc(text)}"
    if reason:
        enriched += f"<div class='reason'>{esc(reason)}</div>"
    return f"<tr><td>{esc(str(item['item_id']))}</td><td>{catalog}</td><td>{enriched}</td></tr>"


def write_outputs(out_dir: str, report, timed: TimedBackend, items, results, sample: int) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    with open(os.path.join(out_dir, "report.html"), "w", encoding="utf-8") as fh:
        fh.write(render_html(report, items, results, sample))
    with open(os.path.join(out_dir, "replies.jsonl"), "w", encoding="utf-8") as fh:
        for reply in timed.replies:
            fh.write(json.dumps(reply) + "\n")


def _result_dict(result: Any) -> Dict[str, Any]:
    if isinstance(result, EnrichmentResult):
        return {"status": result.status, "text": result.text, "reason": result.reason,
                "n_calls": result.n_calls, "checks": list(result.checks)}
    return {"status": "error", "reason": str(getattr(result, "message", result))}


def run_report(config: VlclipConfig, items: List[dict], out_dir: str, sample: int) -> Dict[str, Any]:
    """Enrich `items` with the profile's LLM; write report.json/.html, items.jsonl, replies.jsonl."""
    from vlclip_core.stages.enrichment import build_backend

    timed = TimedBackend(build_backend(config))
    agent = EnrichmentAgent(timed, config.models.llm)
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    with open(os.path.join(out_dir, "items.jsonl"), "w", encoding="utf-8") as sink:
        results = enrich_all(agent, items, config.stages.enrichment.batch_size, sink)
    report = build_report(agent, timed, items, results, time.perf_counter() - start)
    write_outputs(out_dir, report, timed, items, results, sample)
    log.info("enrichment report: %s", json.dumps(report))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlclip-enrich-report", description=__doc__)
    parser.add_argument("--config", required=True, help="profile, e.g. conf/tiny.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value override")
    parser.add_argument("--items", type=int, default=50, help="the first N catalog items")
    parser.add_argument("--sample", type=int, default=30, help="items shown side by side in the HTML page")
    parser.add_argument("--out", default="build/enrich_report")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("INFO")
    config = load_config(args.config, tuple(args.overrides))
    if args.items <= 0:
        raise SystemExit(f"--items must be > 0, got {args.items}")
    from vlclip_core.warehouse.spark_session import get_spark

    spark = get_spark(config.spark)
    try:
        items = read_items(spark, config, args.items)
    finally:
        spark.stop()  # the JVM's memory is the LLM's from here on
    report = run_report(config, items, args.out, args.sample)
    accepted = report.get("accepted", 0)
    fallback = report["status_counts"].get(STATUS_FALLBACK, 0)
    log.info("%d items: %d accepted, %d fallback; report in %s", len(items), accepted, fallback, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
