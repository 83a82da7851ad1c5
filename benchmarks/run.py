"""`make bench`: the comparisons of issues 5 and 21 side by side in one process; a table and results.json."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional

from benchmarks.ann_bench import ann_recall
from benchmarks.context import BenchContext, BenchOptions, shutdown_ray
from benchmarks.delta_bench import merge_cost, nightly_noop
from benchmarks.e2e import cache_win, framework_overhead, naive_baseline, peak_memory, scaling
from benchmarks.io_bound import io_bound
from benchmarks.measure import machine_info
from benchmarks.report import table_lines, write_json
from benchmarks.train_bench import train_throughput

log = logging.getLogger("benchmarks.run")

# Run order matters: naive_baseline and cache_win reuse framework_overhead's runs when it ran (each
# runs its own otherwise), peak_memory reads the others.
COMPARISONS: Dict[str, Callable[[BenchContext], dict]] = {
    "framework_overhead": framework_overhead,
    "naive_baseline": naive_baseline,
    "io_bound": io_bound,
    "nightly_noop": nightly_noop,
    "merge_cost": merge_cost,
    "scaling": scaling,
    "cache_win": cache_win,
    "peak_memory": peak_memory,
    "ann_recall": ann_recall,
    "train_throughput": train_throughput,
}
QUICK = dict(
    overhead_items=100,
    scale_small=60,
    scale_large=600,
    image_pool=100,
    noop_items=5_000,
    merge_sizes=(5_000, 50_000),
    merge_changed=500,
    merge_rows_per_file=5_000,
    shard_size=200,
    ann_items=10_000,
    io_items=40,
)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--out", default="bench_out", help="output directory (results.json, data, work)")
    p.add_argument(
        "--repeats", type=int, default=None, help="repeats of each timed part (default 3; --quick 2)"
    )
    p.add_argument(
        "--noop-repeats",
        type=int,
        default=None,
        help="repeats of the nightly no-op comparison (default 9; --quick 3)",
    )
    p.add_argument("--scaling-repeats", type=int, default=1, help="repeats of the two scaling runs")
    p.add_argument(
        "--scale-small", type=int, default=None, help="items of the small scaling run (default 2000)"
    )
    p.add_argument(
        "--scale-large", type=int, default=None, help="items of the large scaling run (default 20000)"
    )
    p.add_argument(
        "--overhead-items",
        type=int,
        default=None,
        help="items of the overhead / naive / cache-win runs (default 500)",
    )
    p.add_argument(
        "--io-items", type=int, default=None, help="items of the prod-like I/O comparison (default 200)"
    )
    p.add_argument(
        "--io-image-delay-ms",
        type=float,
        default=50.0,
        help="latency the loopback image server adds to each request (io_bound)",
    )
    p.add_argument(
        "--io-llm-delay-ms",
        type=float,
        default=300.0,
        help="latency of each reply of the loopback LLM server (io_bound)",
    )
    p.add_argument(
        "--model-size",
        choices=("tiny", "bench"),
        default="bench",
        help="models of the overhead / naive / cache-win runs",
    )
    p.add_argument("--scaling-model-size", choices=("tiny", "bench"), default="tiny")
    p.add_argument("--bare-threads", type=int, default=0, help="torch threads of the bare loop (0: all CPUs)")
    p.add_argument(
        "--only", action="append", choices=sorted(COMPARISONS), help="run only these comparisons (repeatable)"
    )
    p.add_argument(
        "--quick", action="store_true", help="every size ~10-50x smaller: a smoke run of a few minutes"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        dest="job_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override of every run (repeatable), e.g. stages.enrichment.num_actors=2",
    )
    return p.parse_args(argv)


def options_from(args: argparse.Namespace) -> BenchOptions:
    opts = BenchOptions(
        out=args.out,
        scaling_repeats=args.scaling_repeats,
        model_size=args.model_size,
        scaling_model_size=args.scaling_model_size,
        bare_threads=args.bare_threads,
        seed=args.seed,
        job_overrides=tuple(args.job_overrides),
        io_image_delay_s=args.io_image_delay_ms / 1000,
        io_llm_delay_s=args.io_llm_delay_ms / 1000,
    )
    if args.quick:
        opts = dataclasses.replace(opts, repeats=2, noop_repeats=3, **QUICK)
    explicit = {
        "repeats": args.repeats,
        "noop_repeats": args.noop_repeats,
        "scale_small": args.scale_small,
        "scale_large": args.scale_large,
        "overhead_items": args.overhead_items,
        "io_items": args.io_items,
    }
    return dataclasses.replace(opts, **{k: v for k, v in explicit.items() if v is not None})


def run_comparison(name: str, fn: Callable[[BenchContext], dict], ctx: BenchContext) -> dict:
    """Run one comparison; a failure is recorded with its error and traceback, never raised."""
    log.info("=== %s ===", name)
    if ctx.spark is not None:
        release_session_caches(ctx.spark)
    start = time.perf_counter()
    try:
        outcome = {"status": "ok", **fn(ctx)}
    except Exception as err:  # noqa: BLE001 - one failed comparison must not stop the others
        log.error("%s failed: %s: %s", name, type(err).__name__, err)
        outcome = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}"[:2000],
            "traceback": traceback.format_exc()[-8000:],
        }
        shutdown_ray()
    outcome["seconds"] = round(time.perf_counter() - start, 2)
    return outcome


def release_session_caches(spark) -> None:
    """Start each comparison from the session state a nightly spark-submit starts from: no cached
    Delta snapshots or DataFrames of the tables earlier comparisons made (dozens of warehouses by the
    no-op comparison), and a collected heap."""
    spark.catalog.clearCache()
    spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    spark._jvm.java.lang.System.gc()


def start_spark():
    from vlclip_core.config import load_config
    from vlclip_core.warehouse.spark_session import get_spark

    return get_spark(load_config("conf/tiny.yaml", ("catalog.path=unused",)).spark)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    _setup_environment()
    opts = options_from(args)
    results = {
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "options": dataclasses.asdict(opts),
        "machine": machine_info(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "comparisons": {},
    }
    start = time.perf_counter()
    spark = start_spark()
    results["spark_start_s"] = round(time.perf_counter() - start, 2)
    ctx = BenchContext(options=opts, spark=spark)
    for name, fn in COMPARISONS.items():
        if args.only and name not in args.only:
            continue
        results["comparisons"][name] = run_comparison(name, fn, ctx)
        write_json(results, opts.out)
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["wall_s"] = round(time.perf_counter() - start, 1)
    path = write_json(results, opts.out)
    print("\n".join(table_lines(results)))
    print(f"\nwrote {path} ({results['wall_s']} s)")
    spark.stop()
    return 0 if all(c["status"] == "ok" for c in results["comparisons"].values()) else 1


def _setup_environment() -> None:
    """Offline hub, loopback Spark, and the repo on PYTHONPATH so Spark's Python workers import benchmarks."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(repo)
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(key, value)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([repo] + [p for p in paths if p != repo])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
