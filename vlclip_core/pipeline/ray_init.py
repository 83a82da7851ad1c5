"""Ray for the pipeline: start a local Ray or join a cluster, with the Data context the pipeline needs."""

from __future__ import annotations

import logging

from vlclip_core.config import RayConfig

log = logging.getLogger(__name__)


def init_ray(cfg: RayConfig) -> None:
    """Start an in-process Ray (address local) or join a cluster; reuse one already running."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, log_to_driver=True, runtime_env=cfg.runtime_env or None)
        if cfg.address == "local":
            ray.init(
                address="local", num_cpus=cfg.num_cpus, _system_config=_LOCAL_RAY_SYSTEM_CONFIG, **kwargs
            )
        else:
            ray.init(address=cfg.address, **kwargs)
    context = DataContext.get_current()
    # The v2 Parquet path adds a listing step that always asks for a whole CPU: on small nodes whose
    # actors reserve the rest, the pipeline would wait for it forever.
    context.use_datasource_v2 = False
    context.enable_progress_bars = False
    # A batch that still fails after its retries is dropped by Ray Data (up to this many) and its
    # rows become error rows (fail_lost_rows); one more ends the run.
    context.max_errored_blocks = cfg.max_failed_batches


# Few, long-lived workers: a respawned Python worker costs about a CPU-second.
_LOCAL_RAY_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000, "num_workers_soft_limit": 8}
