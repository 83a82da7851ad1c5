"""Stage heartbeats: which stage holds a batch and for how long, so a stalled run names the stuck stage."""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from typing import Callable, Dict, Optional


class StageHeartbeat:
    """A zero-CPU Ray actor that records batches entering and leaving each stage."""

    def __init__(self):
        self.in_flight: Dict[str, tuple] = {}
        self.done: Dict[str, int] = defaultdict(int)
        self.actors: list = []
        self.last_event = time.time()

    def register(self, actor) -> None:
        """Stage actors register their handle, so the driver can stop them when the run ends."""
        self.actors.append(actor)
        self.last_event = time.time()

    def registered(self) -> list:
        return list(self.actors)

    def begin(self, token: str, stage: str, started: float, pid: int) -> None:
        self.in_flight[token] = (stage, started, pid)
        self.last_event = time.time()

    def end(self, token: str, stage: str) -> None:
        self.in_flight.pop(token, None)
        self.done[stage] += 1
        self.last_event = time.time()

    def touch(self) -> None:
        """A stage made progress inside a batch (an item finished alone, under its deadline)."""
        self.last_event = time.time()

    def snapshot(self) -> dict:
        return {
            "in_flight": list(self.in_flight.values()),
            "done": dict(self.done),
            "last_event": self.last_event,
        }


def start_heartbeat(run_id: str):
    import ray

    actor = ray.remote(num_cpus=0, max_restarts=0)(StageHeartbeat)
    return actor.options(name=f"vlclip-heartbeat-{run_id}", get_if_exists=True).remote()


def register_current_actor(heartbeat) -> None:
    import ray

    if heartbeat is not None:
        heartbeat.register.remote(ray.get_runtime_context().current_actor)


def stop_run_actors(heartbeat) -> None:
    """Kill this run's stage actors and the heartbeat.

    Ray Data stops its actors when a dataset finishes, but not while the driver is still waiting on a
    stuck batch: without this a stalled or interrupted run would leave its actors (and the resources
    they reserve) behind.
    """
    import ray

    try:
        actors = ray.get(heartbeat.registered.remote(), timeout=10)
    except Exception:  # noqa: BLE001 - nothing more to stop when the heartbeat itself is gone
        actors = []
    for actor in actors + [heartbeat]:
        ray.kill(actor, no_restart=True)


def beating(heartbeat, stage: str, fn: Callable, batch):
    """Run fn(batch) between a begin and an end beat (fire-and-forget calls, never waited on)."""
    if heartbeat is None:
        return fn(batch)
    token = uuid.uuid4().hex
    heartbeat.begin.remote(token, stage, time.time(), os.getpid())
    try:
        return fn(batch)
    finally:
        heartbeat.end.remote(token, stage)


def describe_stall(snapshot: Optional[dict], now: Optional[float] = None) -> str:
    """Name the stage whose batch has been in flight the longest, with the per-stage batch counts."""
    if snapshot is None:
        return "stage state unavailable"
    now = now or time.time()
    done = ", ".join(f"{k} {v}" for k, v in sorted(snapshot["done"].items())) or "none"
    if not snapshot["in_flight"]:
        return f"no stage holds a batch (actors not started or waiting for resources); batches done: {done}"
    stage, started, pid = min(snapshot["in_flight"], key=lambda entry: entry[1])
    return (
        f"stage {stage!r} has held a batch for {now - started:.0f}s (worker pid {pid}); batches done: {done}"
    )
