"""Shared constants and helpers of the job-level tests (runs of the whole job on tiny models)."""

from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_ITEMS = 24  # items in the session's sample catalog
TEST_LLM_KEY_ENV = "VLCLIP_TEST_LLM_KEY"
TEST_LLM_KEY = "sk-vlclip-test-4f1d2c9a7e"


def job_overrides(models: dict, catalog: str, warehouse: str) -> tuple:
    """Overrides that point the tiny profile at the test's models, catalog and warehouse.

    The job tests run the split layout (a pool per model stage, as on GPU clusters), which the fault
    tests were written against, with one actor per pool and 2 decode tasks: each shard is a block of
    its own, so Ray Data would grow the pools, and on 2 cores a second actor's model load costs more
    than the tests' few items. The fused layout and `auto` pools that grow have their own tests.
    """
    from vlclip_core.models.tiny import tiny_overrides

    return tiny_overrides(models) + (
        f"catalog.path={catalog}",
        f"warehouse.path={warehouse}",
        "job.shard_size=10",
        "job.log_every_s=1",
        "ray.stall_timeout_s=300",
        "stages.layout=split",
        "stages.decode.num_actors=2",
        *(f"stages.{name}.max_actors=1" for name in ("grounding", "enrichment", "clip")),
    )


def race_for_the_lock(spark, staging: str, **lock_kwargs):
    """Two runs take the Delta run lock of `staging` at the same moment (a barrier between them);
    returns the outcomes ("held" / "refused") and the locks that were taken."""
    import threading

    from vlclip_core.warehouse.locks import DeltaRunLock, RunLockedError

    barrier, outcomes, locks = threading.Barrier(2), [], []

    def take(name):
        lock = DeltaRunLock(spark, staging, name, **lock_kwargs)
        barrier.wait()
        try:
            locks.append(lock.__enter__())
            outcomes.append("held")
        except RunLockedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=take, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes, locks
