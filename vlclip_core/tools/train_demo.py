"""`make train-demo`: embed a sample catalog, fine-tune the tiny CLIP on it, and compare held-out retrieval
of the untrained and the trained model (the demo fails when training does not win)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional

from vlclip_core.logs import setup_logging

log = logging.getLogger(__name__)

NOTE = """\
The tiny profile's detector and LLM have random weights: the boxes are arbitrary regions of the scene and
every enriched text is the cleaned catalog text (enrichment_status=fallback). The CLIP starts from random
weights too, so "untrained" is chance level; the comparison shows that the training loop learns from the
pairs, not VL-CLIP's published numbers."""


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vlclip_core.tools.train_demo", description=__doc__)
    p.add_argument("--config", default="conf/train_tiny.yaml", help="training profile")
    p.add_argument("--items", type=int, default=300, help="sample catalog size (generated when missing)")
    p.add_argument(
        "--catalog",
        default=None,
        help="default: data/sample/catalog for 300 items, else data/train_demo_<items>/catalog",
    )
    p.add_argument(
        "--ablation",
        action="append",
        default=[],
        help="also train and evaluate these ablations (no_grounding, no_enrichment, ...)",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[])
    return p.parse_args(argv)


def ensure_catalog(catalog: str, items: int) -> None:
    from vlclip_core.tools.sample_catalog import make_sample_catalog

    if not os.path.exists(catalog):
        made = make_sample_catalog(os.path.dirname(catalog.rstrip("/")), n_items=items)
        if os.path.abspath(made) != os.path.abspath(catalog):
            raise RuntimeError(f"sample catalog went to {made}, not {catalog}")


def train_and_compare(overrides: tuple, config: str, ablation: str) -> Dict[str, object]:
    """Train one ablation and evaluate the starting and the trained checkpoint on its held-out pairs."""
    from vlclip_core.train.config import load_train_config
    from vlclip_core.train.evaluate import run_evaluation
    from vlclip_core.train.trainer import run_training

    cfg = load_train_config(config, overrides + (f"data.ablation={ablation}",))
    trained = run_training(cfg)
    return {
        "training": trained,
        "untrained": run_evaluation(cfg, None),
        "trained": run_evaluation(cfg, trained.output_checkpoint),
    }


def wins(result: Dict[str, object]) -> bool:
    """Trained beats untrained on the MRR of both tasks."""
    from vlclip_core.train.evaluate import IMAGE_TO_IMAGE, TEXT_TO_IMAGE

    return all(
        result["trained"].overall(t)["mrr"] > result["untrained"].overall(t)["mrr"]
        for t in (TEXT_TO_IMAGE, IMAGE_TO_IMAGE)
    )


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging("INFO")
    from vlclip_core.models.tiny import build_tiny_models
    from vlclip_core.run.job import run_job
    from vlclip_core.train.config import load_train_config
    from vlclip_core.train.evaluate import format_comparison

    catalog = args.catalog or (
        "data/sample/catalog" if args.items == 300 else f"data/train_demo_{args.items}/catalog"
    )
    ensure_catalog(catalog, args.items)
    build_tiny_models("models/tiny")
    overrides = tuple(args.overrides) + (f"embed.catalog.path={catalog}",)
    embed = run_job(load_train_config(args.config, overrides).embed())
    overrides += (f"data.model_version={embed.model_version}",)
    results = {a: train_and_compare(overrides, args.config, a) for a in ["none", *args.ablation]}
    for ablation, result in results.items():
        training = result["training"]
        print(
            f"\n== ablation {ablation}: run {training.run_id}, {training.steps} steps, loss "
            f"{training.losses[0]:.3f} -> {training.losses[-1]:.3f}, "
            f"{training.dataset.counts['train']} train / {training.dataset.counts['eval']} held-out pairs"
        )
        print(format_comparison({"untrained": result["untrained"], "trained": result["trained"]}))
    print("\n" + NOTE)
    failed = [a for a, r in results.items() if not wins(r)]
    if failed:
        print(f"\ntrained model did NOT beat the untrained one for: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(
        "\ntrained beats untrained on held-out MRR (text->image and image->image) for: " + ", ".join(results)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
