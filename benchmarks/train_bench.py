"""Training throughput: the Ray Train loop (TorchTrainer, one worker) vs a bare torch loop.

Same model, data and batch on both sides:

    python -m benchmarks.train_bench --out bench_out [--model-size tiny|bench] [--steps 60] [--batch-size 32]

Both sides run the project's own step (`loop.train_step`) on the same pairs Parquet (sample catalog images
cropped at their true boxes, cleaned catalog text), with the same torch thread count. Figures: steady pairs/s
(first step to last, model loading excluded; the Ray side measures inside its worker, before its one
checkpoint) and wall time of the whole call (Ray Train start-up, model load and the checkpoint included).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.measure import machine_info, ratio, spread
from benchmarks.models import MODEL_SIZES, build_clip
from benchmarks.report import at_least, headline, write_json

log = logging.getLogger("benchmarks.train_bench")


def write_bench_pairs(out: str, items: int, seed: int, max_side: int) -> str:
    """A pairs Parquet (all train) from a generated sample catalog, built by the pairs module's row code."""
    from vlclip_core.config import ImageConfig
    from vlclip_core.tools.sample_catalog import TRUE_BOX, make_sample_catalog, read_catalog
    from vlclip_core.train.config import DataConfig
    from vlclip_core.train.pairs import SPLIT, TRAIN, pair_row

    path = os.path.join(out, "pairs", "part-0.parquet")
    if os.path.exists(path):
        return os.path.dirname(path)
    catalog = read_catalog(
        make_sample_catalog(os.path.join(out, "catalog"), n_items=items, seed=seed)
    ).to_pylist()
    data = DataConfig(ablation="no_enrichment", max_side=max_side)
    rows = [
        pair_row(
            {**r, SPLIT: TRAIN, "enriched_text": None, "grounding_box": r[TRUE_BOX], "grounded": True},
            ImageConfig(),
            data,
            600,
        )
        for r in catalog
    ]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return os.path.dirname(path)


def bench_config(out: str, clip: Dict[str, str], pairs: str, args: argparse.Namespace):
    from vlclip_core.train.config import load_train_config

    return load_train_config(
        "conf/train_tiny.yaml",
        (
            f"embed.catalog.path={os.path.join(out, 'catalog')}",
            f"embed.models.clip.model_name={clip['model_name']}",
            f"embed.models.clip.config_dir={clip['config_dir']}",
            f"embed.models.clip.pretrained={clip['checkpoint']}",
            "embed.ray.num_cpus=2",
            f"train.steps={args.steps}",
            f"train.checkpoint_every={args.steps}",
            f"train.batch_size={args.batch_size}",
            f"train.cpus_per_worker={args.cpus_per_worker}",
            f"train.output_dir={os.path.join(out, 'training')}",
        ),
    )


def bare_loop(cfg, clip_cfg, pairs: str) -> Dict[str, float]:
    """The same steps in this process: no Ray, no DDP, no checkpoint; the pairs held in memory."""
    import numpy as np

    from vlclip_core.train.loop import (
        load_train_model,
        make_loss,
        make_optimizer,
        seed_everything,
        train_step,
    )

    start = time.perf_counter()
    torch.set_num_threads(cfg.train.threads())
    seed_everything(cfg.train.seed)
    model, encoder = load_train_model(clip_cfg, torch.device("cpu"))
    from vlclip_core.train.pairs import IMAGE_PNG, TEXT, decode_png

    table = pq.read_table(pairs, columns=[IMAGE_PNG, TEXT])
    images, tokens_all = table[IMAGE_PNG].to_pylist(), encoder.tokenizer(table[TEXT].to_pylist())
    optimizer, scheduler = make_optimizer(model, cfg.train)
    loss_fn, t = make_loss(), cfg.train
    per_epoch = len(images) // t.batch_size
    first = time.perf_counter()
    for step in range(t.steps):
        epoch, index = divmod(step, per_epoch)
        rows = np.random.default_rng([t.seed, epoch]).permutation(len(images))
        rows = rows[index * t.batch_size : (index + 1) * t.batch_size]
        pixels = encoder.preprocess([decode_png(images[i]) for i in rows])
        tokens = tokens_all[rows]
        train_step(model, pixels, tokens, loss_fn, optimizer, scheduler, t.grad_clip_norm)
    end = time.perf_counter()
    return {"pairs_per_s": t.steps * t.batch_size / (end - first), "wall_s": end - start}


def ray_loop(cfg, embed, pairs: str, run_id: str) -> Dict[str, float]:
    from vlclip_core.train.pairs import PairsDataset
    from vlclip_core.train.trainer import fit

    import pyarrow.dataset as pads

    rows = pads.dataset(pairs, format="parquet").count_rows()  # every bench pair is a good train pair
    dataset = PairsDataset("bench", pairs, "bench", 0, "bench", "no_enrichment", {"train": rows})
    start = time.perf_counter()
    state = fit(cfg, embed, dataset, run_id)
    return {"pairs_per_s": state["metrics"]["pairs_per_s"], "wall_s": time.perf_counter() - start}


def run(args: argparse.Namespace) -> dict:
    out = os.path.abspath(os.path.join(args.out, f"train_bench-{args.model_size}"))
    clip = build_clip(os.path.join(out, "models"), args.model_size, args.seed)
    pairs = write_bench_pairs(out, args.items, args.seed, args.max_side)
    cfg = bench_config(out, clip, pairs, args)
    embed = cfg.embed()
    from vlclip_core.train.trainer import clip_for_workers

    bare: List[dict] = []
    ray_runs: List[dict] = []
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for repeat in range(args.repeats):  # interleaved, so drifting machine load hits both sides alike
        bare.append(bare_loop(cfg, clip_for_workers(embed), pairs))
        ray_runs.append(ray_loop(cfg, embed, pairs, f"bench-{stamp}-{repeat}"))
        log.info("repeat %d: bare %s, ray %s", repeat, bare[-1], ray_runs[-1])
    return {
        "model_size": args.model_size,
        "items": args.items,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "torch_threads": cfg.train.threads(),
        "bare": _spread(bare),
        "ray_train": _spread(ray_runs),
        "ratio_pairs_per_s": ratio([r["pairs_per_s"] for r in ray_runs], [b["pairs_per_s"] for b in bare]),
        "ratio_wall": ratio([r["wall_s"] for r in ray_runs], [b["wall_s"] for b in bare]),
    }


def train_throughput(ctx) -> dict:
    """The comparison as `python -m benchmarks.run --only train_throughput` runs it (default sizes)."""
    opts = ctx.options
    figures = run(parse_args(["--out", opts.out, "--repeats", str(opts.repeats), "--seed", str(opts.seed)]))
    speed = figures["ratio_pairs_per_s"]
    rows = [
        headline("bare torch loop pairs/s", figures["bare"]["pairs_per_s"], "pairs/s"),
        headline("Ray Train loop pairs/s", figures["ray_train"]["pairs_per_s"], "pairs/s"),
        headline("pairs/s ratio Ray Train/bare", speed, "x", ">= 0.8", at_least(speed, 0.8)),
        headline("wall ratio Ray Train/bare", figures["ratio_wall"], "x"),
    ]
    return {"figures": figures, "headline": rows}


def _spread(runs: List[dict]) -> dict:
    return {key: spread([r[key] for r in runs]) for key in ("pairs_per_s", "wall_s")}


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_bench", description=__doc__)
    p.add_argument("--out", default="bench_out")
    p.add_argument("--model-size", choices=MODEL_SIZES, default="tiny")
    p.add_argument("--items", type=int, default=256)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--max-side", type=int, default=160)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    from benchmarks.run import _setup_environment

    args = parse_args(argv)
    _setup_environment()
    results = {
        "command": "python -m benchmarks.train_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "train_throughput": run(args),
    }
    path = write_json(results, os.path.join(args.out, "train_bench"))
    r = results["train_throughput"]
    print(
        f"pairs/s  bare {r['bare']['pairs_per_s']['median']}  "
        f"ray_train {r['ray_train']['pairs_per_s']['median']}  "
        f"ratio {r['ratio_pairs_per_s']}"
    )
    print(f"wall s   bare {r['bare']['wall_s']['median']}  ray_train {r['ray_train']['wall_s']['median']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
