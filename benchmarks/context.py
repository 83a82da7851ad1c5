"""What every comparison shares: options, output folder, one Spark session, models, catalogs, timed runs."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

from benchmarks.bare import run_bare_loop, steady_rate
from benchmarks.catalogs import cycled_catalog
from benchmarks.measure import RssSampler, pipeline_marks, spread
from benchmarks.models import build_models
from benchmarks.naive import run_naive
from benchmarks.stage_time import busy_only, run_stages
from vlclip_core.config import VlclipConfig, load_config
from vlclip_core.models.tiny import tiny_overrides

log = logging.getLogger(__name__)

PROFILE = "conf/tiny.yaml"


@dataclass
class BenchOptions:
    """Sizes and knobs of one benchmark run (see `python -m benchmarks.run --help`)."""

    out: str = "bench_out"
    repeats: int = 3
    scaling_repeats: int = 1
    model_size: str = "bench"
    scaling_model_size: str = "tiny"
    overhead_items: int = 500
    scale_small: int = 2000
    scale_large: int = 20000
    image_pool: int = 2000
    noop_items: int = 100_000
    noop_repeats: int = 9  # a no-op repeat takes seconds; its figures swing +-30 % on 2 cores
    merge_sizes: tuple = (100_000, 1_000_000)
    merge_changed: int = 10_000
    merge_dim: int = 32
    merge_rows_per_file: int = 50_000
    shard_size: int = 1000
    naive_partitions: int = 0  # 0: the number of CPUs
    bare_threads: int = 0  # torch threads of the bare loop; 0: the number of CPUs
    seed: int = 0
    job_overrides: tuple = ()  # extra config overrides (KEY=VALUE) of every vlclip run and bare loop
    ann_items: int = 100_000  # vectors of the ANN index comparison
    ann_dims: tuple = (64, 512)
    ann_queries: int = 1000
    ann_ef_search: tuple = (32, 64, 128, 256)
    io_items: int = 1000  # items of the prod-like I/O comparison (fixed costs stay a minor part)
    io_image_delay_s: float = 0.05  # latency the loopback image server adds to each request
    io_llm_delay_s: float = 0.3  # latency of each reply of the loopback OpenAI-compatible server
    io_warmup_items: int = 16  # items of the untimed warm-up run of each side (0: none)
    fresh_ray: bool = True  # each vlclip run starts and stops its own Ray (False: reuse a running one)


@dataclass
class BenchContext:
    options: BenchOptions
    spark: object = None
    shared: Dict[str, object] = field(default_factory=dict)
    _models: Dict[str, dict] = field(default_factory=dict)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.options.out, "data")

    def work_dir(self, name: str) -> str:
        """An empty directory under <out>/work (removed first when it exists)."""
        path = os.path.abspath(os.path.join(self.options.out, "work", name))
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def models(self, size: str) -> dict:
        if size not in self._models:
            self._models[size] = build_models(
                os.path.join(self.data_dir, f"models-{size}"), size, self.options.seed
            )
        return self._models[size]

    def catalog(self, n_items: int) -> str:
        return cycled_catalog(self.data_dir, n_items, self.options.image_pool, self.options.seed)

    def job_config(self, catalog: str, warehouse: str, size: str, *overrides: str) -> VlclipConfig:
        base = tiny_overrides(self.models(size)) + (
            f"catalog.path={catalog}",
            f"warehouse.path={warehouse}",
            f"job.shard_size={self.options.shard_size}",
            "job.log_every_s=30",
            "ray.stall_timeout_s=900",
            "models.device=cpu",
        )
        return load_config(PROFILE, base + tuple(self.options.job_overrides) + tuple(overrides))

    def timed_job(self, config: VlclipConfig) -> dict:
        """run_job end to end (Ray started inside, Spark session shared), with marks and peak RSS."""
        from vlclip_core.run.job import run_job

        if self.options.fresh_ray:
            shutdown_ray()
        with RssSampler() as rss, pipeline_marks() as marks:
            start = time.perf_counter()
            report = run_job(config, self.spark)
            total = time.perf_counter() - start
        if self.options.fresh_ray:
            shutdown_ray()
        marks = [(t - start, rows) for t, rows in marks]
        return {
            "total_s": total,
            "steady_items_per_s": steady_rate(marks),
            "first_batch_s": marks[0][0] if marks else None,
            "items_selected": report.items_selected,
            "items_embedded": report.items_embedded,
            "items_failed": report.items_failed,
            "detector_calls": report.detector_calls,
            "llm_calls": report.llm_calls,
            "phase_seconds": dict(report.phase_seconds),
            "stages": run_stages(report),
            "rss_mib": rss.peaks.as_dict(),
            "status": report.status,
        }

    def timed_naive(self, catalog: str, size: str, run_key: str, *overrides: str) -> dict:
        """The naive mapInPandas job over the catalog (models loaded anew per run key), with peak RSS."""
        config = self.job_config(catalog, self.work_dir("naive-unused"), size, *overrides)
        partitions = self.options.naive_partitions or os.cpu_count() or 1
        with RssSampler() as rss:
            out = self.work_dir(f"{run_key}-out")
            result = run_naive(self.spark, catalog, config, out, partitions, run_key)
        return {
            "total_s": result["total_s"],
            "steady_items_per_s": steady_rate(result["marks"]),
            "first_batch_s": result["marks"][0][0] if result["marks"] else None,
            "rows": result["rows"],
            "ok": result["ok"],
            "partitions": partitions,
            "llm_calls": result["llm_calls"],
            "stages": busy_only(result["stage_seconds"]),
            "rss_mib": rss.peaks.as_dict(),
        }

    def timed_bare(self, catalog: str, size: str, *overrides: str) -> dict:
        """The bare loop over the catalog in this process, all cores for torch, with peak RSS."""
        from vlclip_core.tools.sample_catalog import read_catalog

        config = self.job_config(catalog, self.work_dir("bare-unused"), size, *overrides)
        table = read_catalog(catalog)
        with RssSampler() as rss:
            timing = run_bare_loop(table, config, threads=self.options.bare_threads or os.cpu_count() or 1)
        return {
            "total_s": timing.total_s,
            "steady_items_per_s": timing.steady_items_per_s(),
            "first_batch_s": timing.first_batch_s,
            "load_s": timing.load_s,
            "items_ok": timing.ok,
            "detector_calls": timing.detector_calls,
            "llm_calls": timing.llm_calls,
            "rss_mib": rss.peaks.as_dict(),
        }


def shutdown_ray() -> None:
    """Stop the in-process Ray so that each timed run pays its own start-up and leaves no workers behind."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def summarise(runs: list, keys=("total_s", "steady_items_per_s", "first_batch_s")) -> Dict[str, object]:
    """Spread of each key over repeated runs, plus the runs themselves."""
    out: Dict[str, object] = {k: spread([r[k] for r in runs if r.get(k) is not None]) for k in keys}
    out["runs"] = runs
    return out


def first_of(runs: list, key: str) -> Optional[object]:
    return runs[0].get(key) if runs else None
