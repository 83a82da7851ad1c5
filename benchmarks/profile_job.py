"""Profile one run of the job with pyinstrument: the nightly no-op or an end-to-end run.

    python -m benchmarks.profile_job --scenario noop --items 100000
    python -m benchmarks.profile_job --scenario e2e --items 200 --model-size bench

The catalog, models and warehouse are those `benchmarks.run` builds (under --out); the profiled run
follows untimed warm-up runs, so it shows steady costs, not JVM start-up. Writes profile.txt and
profile.html under <out>/profile-<scenario>-<items>/ and prints the text tree. Time shown under
py4j's socket.recv_into is the driver waiting for Spark; under the pipeline's queue.get, for Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from typing import List, Optional

from benchmarks.catalogs import synthetic_catalog
from benchmarks.context import BenchContext, BenchOptions, shutdown_ray
from benchmarks.delta_bench import NOOP_DIM, synthetic_rows, valid_keys
from vlclip_core.warehouse.spark_session import get_spark
from vlclip_core.warehouse.tables import Tables, merge_embeddings

log = logging.getLogger(__name__)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_job",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenario", choices=("noop", "e2e"), default="noop")
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--model-size", choices=("tiny", "bench"), default="tiny", help="models of the e2e run")
    p.add_argument("--warmups", type=int, default=1, help="untimed runs before the profiled one")
    p.add_argument("--out", default="bench_out")
    return p.parse_args(argv)


def noop_config(ctx: BenchContext, n_items: int):
    """A warehouse whose embeddings are current for every item of a synthetic catalog."""
    config = ctx.job_config(
        synthetic_catalog(ctx.data_dir, n_items), ctx.work_dir(f"profile-noop-{n_items}"), "tiny"
    )
    tables = Tables(ctx.spark, config.warehouse)
    tables.ensure_all()
    merge_embeddings(
        tables,
        synthetic_rows(
            valid_keys(ctx.spark, config, tables), config.model_version, NOOP_DIM, ctx.options.seed
        ),
        config.model_version,
        update_unchanged=False,
    )
    return config


def main(argv: Optional[List[str]] = None) -> int:
    from pyinstrument import Profiler

    from vlclip_core.logs import setup_logging
    from vlclip_core.run.job import run_job

    args = parse_args(argv)
    setup_logging()
    ctx = BenchContext(BenchOptions(out=args.out))
    ctx.spark = get_spark(
        ctx.job_config(synthetic_catalog(ctx.data_dir, 1), ctx.work_dir("profile-unused"), "tiny").spark
    )
    if args.scenario == "noop":
        config = noop_config(ctx, args.items)
        warehouse = config.warehouse.path
    else:
        catalog = ctx.catalog(args.items)
        warehouse = ctx.work_dir(f"profile-e2e-{args.items}")
        config = ctx.job_config(catalog, warehouse, args.model_size, "job.mode=backfill")
    # staging in the main thread: the profiler samples the thread it starts in
    config = dataclasses.replace(config, ray=dataclasses.replace(config.ray, start_during_staging=False))
    for _ in range(args.warmups):
        run_job(config, ctx.spark)
        shutdown_ray()
    profiler = Profiler(interval=0.005)
    profiler.start()
    start = time.perf_counter()
    report = run_job(config, ctx.spark)
    wall = time.perf_counter() - start
    profiler.stop()
    shutdown_ray()
    out_dir = os.path.join(args.out, f"profile-{args.scenario}-{args.items}")
    os.makedirs(out_dir, exist_ok=True)
    text = profiler.output_text(unicode=False, color=False)
    with open(os.path.join(out_dir, "profile.txt"), "w", encoding="utf-8") as fh:
        fh.write(text)
    with open(os.path.join(out_dir, "profile.html"), "w", encoding="utf-8") as fh:
        fh.write(profiler.output_html())
    print(text)
    print(
        f"profiled run: {wall:.2f} s, {report.items_selected} selected, phases {report.phase_seconds}; "
        f"warehouse {warehouse}; written to {out_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
