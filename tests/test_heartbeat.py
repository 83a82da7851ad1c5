"""Stage heartbeats: what is in flight and done, how a stall is described, the actor on real local Ray."""

from __future__ import annotations

import os
import time

import pytest

from vlclip_core.pipeline.heartbeat import (
    StageHeartbeat,
    beating,
    describe_stall,
    start_heartbeat,
    stop_run_actors,
)


def test_begin_and_end_move_a_batch_from_in_flight_to_done():
    hb = StageHeartbeat()
    hb.begin("t1", "grounding", 100.0, 11)
    hb.begin("t2", "clip", 105.0, 12)
    hb.end("t1", "grounding")
    snap = hb.snapshot()
    assert snap["in_flight"] == [("clip", 105.0, 12)] and snap["done"] == {"grounding": 1}
    hb.end("unknown-token", "clip")  # an end without its begin still counts the batch
    assert hb.snapshot()["done"] == {"grounding": 1, "clip": 1}


def test_describe_stall_names_the_oldest_batch_in_flight():
    snapshot = {
        "in_flight": [("clip", 150.0, 12), ("grounding", 100.0, 11)],
        "done": {"decode": 4, "clip": 2},
        "last_event": 150.0,
    }
    assert describe_stall(snapshot, now=190.0) == (
        "stage 'grounding' has held a batch for 90s (worker pid 11); batches done: clip 2, decode 4"
    )


def test_describe_stall_without_a_batch_in_flight_or_without_state():
    assert describe_stall({"in_flight": [], "done": {}, "last_event": 0.0}) == (
        "no stage holds a batch (actors not started or waiting for resources); batches done: none"
    )
    assert describe_stall(None) == "stage state unavailable"


def test_beating_without_a_heartbeat_just_runs_the_stage():
    assert beating(None, "decode", lambda b: {"n": b["n"] + 1}, {"n": 1}) == {"n": 2}


@pytest.mark.usefixtures("ray_local")
def test_heartbeat_actor_records_beats_and_stops_with_its_run():
    import ray

    hb = start_heartbeat("test-heartbeat")
    ray.get(hb.snapshot.remote(), timeout=120)  # started (slow on a busy machine)
    assert start_heartbeat("test-heartbeat")._actor_id == hb._actor_id  # one per run id

    def failing(batch):
        raise ValueError("stage error")

    assert beating(hb, "decode", lambda b: b * 2, 21) == 42
    with pytest.raises(ValueError, match="stage error"):
        beating(hb, "decode", failing, 1)
    snap = ray.get(hb.snapshot.remote(), timeout=60)
    assert snap["done"] == {"decode": 2} and snap["in_flight"] == []  # a failed batch leaves too
    hb.begin.remote("stuck", "clip", 1.0, os.getpid())
    assert ray.get(hb.snapshot.remote(), timeout=60)["in_flight"] == [("clip", 1.0, os.getpid())]
    stop_run_actors(hb)
    with pytest.raises(ray.exceptions.RayActorError):  # ray.kill is asynchronous: a call may still land
        for _ in range(120):
            ray.get(hb.snapshot.remote(), timeout=60)
            time.sleep(0.5)
