"""Stage heartbeats: which stage holds a batch and for how long, so a stalled run names the stuck stage."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from typing import Callable, Dict, Optional

log = logging.getLogger(__name__)


class StageHeartbeat:
    """A zero-CPU Ray actor that records batches entering and leaving each stage, and what each pool's
    actors did: busy seconds per stage, time alive between a model load and the last batch."""

    def __init__(self):
        self.in_flight: Dict[str, tuple] = {}
        self.done: Dict[str, int] = defaultdict(int)
        self.actors: list = []
        self.last_event = time.time()
        self.workers: Dict[int, dict] = {}  # pid -> pool, ready_at, load_s, busy_s, last_end
        self.busy: Dict[str, float] = defaultdict(float)
        self.started = time.time()  # the run's pipeline starts with its heartbeat
        self.first_batch: Dict[str, float] = {}  # stage -> when its first batch began

    def register(self, actor, stages: tuple = (), load_s: float = 0.0, pid: Optional[int] = None) -> None:
        """Stage actors register their handle (so the driver can stop them when the run ends), the
        stages they host and how long their models took to load."""
        self.actors.append(actor)
        self.last_event = time.time()
        if pid is not None:
            pool = stages[0] if len(stages) == 1 else "fused"
            self.workers[pid] = {"pool": pool, "ready_at": self.last_event, "load_s": load_s, "busy_s": 0.0,
                                 "last_end": self.last_event}

    def registered(self) -> list:
        return list(self.actors)

    def begin(self, token: str, stage: str, started: float, pid: int) -> None:
        self.in_flight[token] = (stage, started, pid)
        self.first_batch[stage] = min(started, self.first_batch.get(stage, started))
        self.last_event = time.time()
        # a decode task's worker is seen first here: its "pool" is the stage
        self.workers.setdefault(
            pid, {"pool": stage, "ready_at": started, "load_s": 0.0, "busy_s": 0.0, "last_end": started}
        )

    def end(self, token: str, stage: str, finished: Optional[float] = None) -> None:
        entry = self.in_flight.pop(token, None)
        self.done[stage] += 1
        self.last_event = time.time()
        if entry is not None:
            finished = finished or self.last_event
            seconds = max(0.0, finished - entry[1])
            self.busy[stage] += seconds
            worker = self.workers.get(entry[2])
            if worker is not None:
                worker.setdefault("ran", set()).add(stage)
                worker["busy_s"] += seconds
                worker["last_end"] = max(worker["last_end"], finished)

    def touch(self) -> None:
        """A stage made progress inside a batch (an item finished alone, under its deadline)."""
        self.last_event = time.time()

    def snapshot(self) -> dict:
        return {
            "in_flight": list(self.in_flight.values()),
            "done": dict(self.done),
            "last_event": self.last_event,
        }

    def pool_stats(self) -> Dict[str, dict]:
        """Per stage: its pool, the pool's actors (distinct, and most alive at once), the longest model
        load, the stage's busy seconds, the pool's actor-seconds from each actor's load to its last
        batch, and the idle part of those (no batch in the actor); when, after the pipeline started,
        the pool's first actor was ready and the stage's first batch began (its start-up cost)."""
        stats = {}
        for stage, busy in self.busy.items():
            pool = next((w["pool"] for w in self.workers.values() if stage in w.get("ran", ())), stage)
            members = [w for w in self.workers.values() if w["pool"] == pool]
            alive = sum(max(0.0, w["last_end"] - w["ready_at"]) for w in members)
            stats[stage] = {
                "pool": pool,
                "actors": len(members),
                "actors_max": _most_at_once(members),
                "load_s": round(max((w["load_s"] for w in members), default=0.0), 3),
                "busy_s": round(busy, 3),
                "actor_seconds": round(alive, 3),
                "idle_s": round(max(0.0, alive - sum(w["busy_s"] for w in members)), 3),
                "ready_after_s": round(min((w["ready_at"] for w in members), default=self.started)
                                       - self.started, 3),
                "first_batch_after_s": round(self.first_batch.get(stage, self.started) - self.started, 3),
            }
        return stats


def _most_at_once(workers: list) -> int:
    events = sorted([(w["ready_at"], 1) for w in workers] + [(w["last_end"], -1) for w in workers],
                    key=lambda e: (e[0], -e[1]))
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def start_heartbeat(run_id: str):
    import ray

    actor = ray.remote(num_cpus=0, max_restarts=0)(StageHeartbeat)
    return actor.options(name=f"vlclip-heartbeat-{run_id}", get_if_exists=True).remote()


def register_current_actor(heartbeat, stages: tuple = (), load_s: float = 0.0) -> None:
    import ray

    if heartbeat is not None:
        heartbeat.register.remote(ray.get_runtime_context().current_actor, tuple(stages), load_s, os.getpid())


def pool_stats(heartbeat) -> Dict[str, dict]:
    """The pools' figures (StageHeartbeat.pool_stats); empty when the heartbeat cannot answer."""
    import ray

    try:
        return ray.get(heartbeat.pool_stats.remote(), timeout=10)
    except Exception as err:  # noqa: BLE001 - figures only: a run never fails for want of them
        log.warning("no per-stage pool figures: %s: %s", type(err).__name__, err)
        return {}


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
        heartbeat.end.remote(token, stage, time.time())


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
