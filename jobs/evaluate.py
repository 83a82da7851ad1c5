"""Entry point of the retrieval evaluation (also `python -m jobs.evaluate`): HITS@k, MRR, NDCG@10."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from jobs.train_clip import add_common_args, overrides_from
from vlclip_core.logs import setup_logging
from vlclip_core.tools.entry import run_entry
from vlclip_core.train.config import load_train_config


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="evaluate",
        description="Text->image and image->image retrieval of a "
        "CLIP checkpoint on the held-out split, written to the evaluations table.",
    )
    add_common_args(parser)
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="checkpoint file to evaluate, repeatable (default: the embedding profile's)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    return run_entry("evaluation", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from vlclip_core.train.evaluate import format_comparison, run_evaluation

    cfg = load_train_config(args.config, overrides_from(args))
    reports = {f"#{i}": run_evaluation(cfg, ckpt) for i, ckpt in enumerate(args.checkpoint or [None])}
    for label, report in reports.items():
        print(
            f"{label}: model_version {report.model_version} checkpoint {report.checkpoint} "
            f"eval {report.eval_id}"
        )
    print(format_comparison(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
