"""spark-submit entry point of VL-CLIP fine-tuning on Ray Train (also `python -m jobs.train_clip`)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from vlclip_core.logs import setup_logging
from vlclip_core.tools.entry import add_override_args, run_entry
from vlclip_core.train.config import ABLATIONS, load_train_config


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by the training and evaluation entry points."""
    parser.add_argument("--config", required=True, help="training profile, e.g. conf/train_tiny.yaml")
    parser.add_argument("--warehouse", help="the embedding job's warehouse; overrides embed.warehouse.path")
    parser.add_argument("--catalog", help="the catalog; overrides embed.catalog.path")
    parser.add_argument("--model-version", help="embeddings rows to use; overrides data.model_version")
    parser.add_argument(
        "--ablation",
        choices=ABLATIONS,
        help="overrides data.ablation",
    )
    add_override_args(parser, "train.steps=500; embed.<key>=... for the embedding profile")


def overrides_from(args: argparse.Namespace, extra: Optional[dict] = None) -> tuple:
    flags = {
        "embed.warehouse.path": args.warehouse,
        "embed.catalog.path": args.catalog,
        "data.model_version": args.model_version,
        "data.ablation": args.ablation,
        **(extra or {}),
    }
    return tuple(args.overrides) + tuple(f"{k}={v}" for k, v in flags.items() if v)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train_clip",
        description="Fine-tune open_clip on the grounded crops "
        "and enriched texts of one model_version (symmetric InfoNCE, Ray Train).",
    )
    add_common_args(parser)
    parser.add_argument("--run-id", help="resume (or create) this training run; overrides train.run_id")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    return run_entry("training", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from vlclip_core.train.trainer import run_training

    report = run_training(load_train_config(args.config, overrides_from(args, {"train.run_id": args.run_id})))
    print(
        f"training run {report.run_id}: {report.steps} steps (resumed from step {report.resumed_from_step}), "
        f"loss {report.losses[0]:.4f} -> {report.losses[-1]:.4f}"
    )
    print(f"checkpoint      {report.output_checkpoint}")
    print(
        f"model_version   {report.output_model_version} "
        "(embed with --set models.clip.pretrained=<checkpoint>)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
