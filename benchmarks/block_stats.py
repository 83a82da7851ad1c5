"""The driver's memory per Ray Data output block, with and without vlclip's trim of the per-block stats.

    python -m benchmarks.block_stats --blocks 2000 [--ops 5]

A `ray.data.range` of `--blocks` blocks through `--ops` map_batches (Ray fuses them into one operator
after the read) is consumed by `pipeline.watchdog.summaries`, as the pipeline's driver consumes the
shard writer's rows, once as Ray Data leaves it and once with `trim_block_stats`. Prints, per side, the
per-block stats the operators still hold at the end and the driver's RSS growth over the run.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import List, Optional

import psutil


def _identity(batch):
    return batch


def one_run(blocks: int, ops: int, trim: bool) -> dict:
    import ray

    from vlclip_core.pipeline import watchdog

    every = watchdog.TRIM_EVERY_ROWS
    watchdog.TRIM_EVERY_ROWS = every if trim else sys.maxsize
    try:
        ds = ray.data.range(4 * blocks, override_num_blocks=blocks)
        for _ in range(ops):
            ds = ds.map_batches(_identity, batch_size=None)
        gc.collect()
        before, start = psutil.Process().memory_info().rss, time.perf_counter()
        rows = sum(1 for _ in watchdog.summaries(ds, stall_timeout_s=600))
        gc.collect()
        grew = psutil.Process().memory_info().rss - before
        held = sum(len(getattr(op, "_output_blocks_stats", ())) for op in ds._current_executor._topology)
    finally:
        watchdog.TRIM_EVERY_ROWS = every
    return {"trim": trim, "rows": rows, "stats_held": held, "driver_rss_growth_mib": round(grew / 2**20, 1),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.block_stats", description=__doc__)
    p.add_argument("--blocks", type=int, default=2000)
    p.add_argument("--ops", type=int, default=5)
    args = p.parse_args(argv)
    from vlclip_core.config import RayConfig
    from vlclip_core.pipeline.ray_init import init_ray

    init_ray(RayConfig(address="local", num_cpus=2))
    for trim in (False, True):
        print(one_run(args.blocks, args.ops, trim), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
