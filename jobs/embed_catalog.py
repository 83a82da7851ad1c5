"""spark-submit entry point of the nightly catalog-embedding job (also `python -m jobs.embed_catalog`)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from vlclip_core.config import load_config
from vlclip_core.logs import setup_logging
from vlclip_core.tools.entry import add_override_args, run_entry

# 0: succeeded; 1: failed (a run that breached job.thresholds with on_breach=fail merges no embeddings of
# the commit group that breached, nor of any later one);
# 3: degraded (merged, but a threshold was breached with on_breach=degraded)
EXIT_DEGRADED = 3


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="embed_catalog",
        description="Embed new and changed catalog items "
        "(grounding -> LLM enrichment -> CLIP) into Delta tables.",
    )
    parser.add_argument("--config", required=True, help="YAML profile, e.g. conf/tiny.yaml")
    parser.add_argument(
        "--catalog", help="catalog location (Delta table or Parquet directory); overrides catalog.path"
    )
    parser.add_argument(
        "--warehouse", help="directory of the job's own Delta tables; overrides warehouse.path"
    )
    parser.add_argument("--mode", choices=("incremental", "backfill"), help="default: incremental")
    parser.add_argument("--run-id", help="resume (or create) this run id")
    add_override_args(parser, "e.g. --set stages.clip.batch_size=64")
    return parser.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> tuple:
    flags = {
        "catalog.path": args.catalog,
        "warehouse.path": args.warehouse,
        "job.mode": args.mode,
        "job.run_id": args.run_id,
    }
    return tuple(args.overrides) + tuple(f"{k}={v}" for k, v in flags.items() if v)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    return run_entry("run", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from vlclip_core.run.job import run_job
    from vlclip_core.run.summary import format_summary

    report = run_job(load_config(args.config, overrides_from(args)))
    print(format_summary(report))
    if report.status == "degraded":
        print(f"vlclip: run degraded: {report.message}", file=sys.stderr)
        return EXIT_DEGRADED
    return 0


if __name__ == "__main__":
    sys.exit(main())
