"""Actor pools and layout: sizes from config or from the cluster (auto), and what each pool did."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import ConfigError, load_config
from vlclip_core.pipeline.chain import read_shards
from vlclip_core.pipeline.heartbeat import StageHeartbeat
from vlclip_core.pipeline.pools import Cluster, pool_sizes, resolve_layout
from vlclip_core.run.state import create_run

TWO_CPUS = Cluster(cpus=2.0, gpus=0.0)
GPU_NODE = Cluster(cpus=64.0, gpus=8.0)


def stages(profile="conf/tiny.yaml", *overrides):
    return load_config(profile, ("catalog.path=unused",) + overrides).stages


def test_auto_layout_fuses_the_model_stages_on_cpus_and_splits_them_where_there_are_gpus():
    assert resolve_layout(stages(), TWO_CPUS) == "fused"
    assert resolve_layout(stages(), GPU_NODE) == "split"  # the cluster has GPUs
    assert resolve_layout(stages("conf/tiny.yaml", "stages.clip.num_gpus=0.5"), TWO_CPUS) == "split"
    assert resolve_layout(stages("conf/prod.yaml"), TWO_CPUS) == "split"
    assert resolve_layout(stages(), TWO_CPUS, remote_llm=True) == "split"  # enrichment waits on a service
    assert resolve_layout(stages("conf/tiny.yaml", "stages.layout=split"), TWO_CPUS) == "split"
    assert resolve_layout(stages("conf/tiny.yaml", "stages.layout=fused"), GPU_NODE) == "fused"


def test_auto_pools_on_two_cpus_leave_room_for_the_read_decode_and_write_tasks():
    # 2 CPUs - (read 0.25 + write 0.25 + one decode 0.25) - the two other pools' minimum (2 x 0.25)
    # = 0.75 CPU spare: three 0.25-CPU actors at most per stage
    assert pool_sizes(stages(), "split", TWO_CPUS) == {
        "grounding": (1, 3), "enrichment": (1, 3), "clip": (1, 3)
    }
    # fused at 0.5 CPU: (2 - 0.75) / 0.5 = 2 actors, one per core
    assert pool_sizes(stages(), "fused", TWO_CPUS) == {"fused": (1, 2)}
    assert pool_sizes(stages("conf/tiny.yaml", "stages.fused.num_cpus=0.25"), "fused", TWO_CPUS) == {
        "fused": (1, 2)  # 5 would fit, but a fused CPU pool holds one actor per core
    }


def test_auto_gpu_pools_grow_to_the_gpus_they_fit_and_fixed_or_capped_pools_keep_their_size():
    sizes = pool_sizes(stages("conf/prod.yaml"), "split", GPU_NODE)
    assert sizes["grounding"] == (1, 8) and sizes["clip"] == (1, 8)  # one GPU each, 8 GPUs
    assert sizes["enrichment"] == (1, 16)  # max_actors in prod.yaml
    fixed = stages("conf/prod.yaml", "stages.grounding.num_actors=3", "stages.clip.min_actors=2")
    sizes = pool_sizes(fixed, "split", GPU_NODE)
    assert sizes["grounding"] == (3, 3) and sizes["clip"] == (2, 8)
    # a tiny node: the bounds never go below the configured minimum
    tight = stages("conf/tiny.yaml", "stages.clip.min_actors=4")
    assert pool_sizes(tight, "split", TWO_CPUS)["clip"] == (4, 4)


def test_stage_resources_reject_bad_pool_settings_by_name():
    for override, message in (
        ("stages.clip.num_actors=0", "stages.clip.num_actors must be > 0 or auto, got 0"),
        ("stages.clip.num_actors=some", "stages.clip.num_actors must be > 0 or auto, got 'some'"),
        ("stages.clip.num_actors=1.5", "stages.clip.num_actors must be int or str, got 1.5"),
        ("stages.fused.max_actors=0", "stages.fused.max_actors must be >= min_actors (1), got 0"),
        ("stages.grounding.num_threads=0", "stages.grounding.num_threads must be > 0, got 0"),
        ("stages.layout=pipelined", "stages.layout must be one of auto, split, fused; got 'pipelined'"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            stages("conf/tiny.yaml", override)


def test_threads_follow_the_cpus_an_actor_holds_unless_set():
    s = stages("conf/prod.yaml")
    assert (s.grounding.threads, s.enrichment.threads) == (4, 1)
    assert stages("conf/tiny.yaml").fused.threads == 1
    assert stages("conf/tiny.yaml", "stages.clip.num_cpus=0.25").clip.threads == 1


def test_pool_stats_add_busy_time_per_stage_and_idle_time_per_pool():
    hb = StageHeartbeat()
    hb.register("actor-a", ("grounding", "enrichment", "clip"), 3.0, pid=1)
    hb.register("actor-b", ("grounding", "enrichment", "clip"), 5.0, pid=2)
    ready = hb.workers[1]["ready_at"]
    hb.workers[2]["ready_at"] = ready + 10  # b joined 10 s later (the pool scaled up)
    hb.started = ready - 2  # a was ready 2 s after the pipeline started
    for pid, token, offset in ((1, "a1", 0), (2, "b1", 10)):
        hb.begin(token + "g", "grounding", ready + offset, pid)
        hb.end(token + "g", "grounding", ready + offset + 4)
        hb.begin(token + "c", "clip", ready + offset + 4, pid)
        hb.end(token + "c", "clip", ready + offset + 5)
    hb.begin("d1", "decode", ready + 1, 7)
    hb.end("d1", "decode", ready + 3)
    stats = hb.pool_stats()
    assert stats["grounding"] == {
        "pool": "fused", "actors": 2, "actors_max": 1, "load_s": 5.0, "busy_s": 8.0,
        "actor_seconds": 10.0, "idle_s": 0.0, "ready_after_s": 2.0, "first_batch_after_s": 2.0,
    }  # each actor was up 5 s (load to last batch) and busy all of it; they never overlapped
    assert stats["clip"]["busy_s"] == 2.0 and stats["clip"]["pool"] == "fused"
    assert stats["decode"] == {
        "pool": "decode", "actors": 1, "actors_max": 1, "load_s": 0.0, "busy_s": 2.0,
        "actor_seconds": 2.0, "idle_s": 0.0, "ready_after_s": 3.0, "first_batch_after_s": 3.0,
    }


def test_pool_stats_count_the_wait_between_batches_as_idle():
    hb = StageHeartbeat()
    hb.register("actor", ("clip",), 1.0, pid=5)
    ready = hb.workers[5]["ready_at"]
    hb.started = ready - 4
    hb.begin("x", "clip", ready + 2, 5)
    hb.end("x", "clip", ready + 3)
    hb.begin("y", "clip", ready + 9, 5)
    hb.end("y", "clip", ready + 10)
    assert hb.pool_stats()["clip"] | {} == {
        "pool": "clip", "actors": 1, "actors_max": 1, "load_s": 1.0, "busy_s": 2.0,
        "actor_seconds": 10.0, "idle_s": 8.0, "ready_after_s": 4.0, "first_batch_after_s": 6.0,
    }


def staged_run(tmp_path, rows_by_shard):
    """A run whose shards are staged as Spark writes them: one parquet file per shard."""
    state = create_run(str(tmp_path), "run-blocks", "backfill", "mv1", "cfg")
    state.save(shards={str(shard): rows for shard, rows in rows_by_shard.items()})
    for shard, rows in rows_by_shard.items():
        storage.makedirs(state.shard_input(shard))
        ids = [f"s{shard}-{i}" for i in range(rows)]
        pq.write_table(pa.table({S.ITEM_ID: ids}), f"{state.shard_input(shard)}/part-0.parquet")
    return state


@pytest.mark.parametrize("overrides, largest, per_shard", [((), 29, 7), (("ray.block_rows=100",), 100, 2)])
def test_a_shard_file_is_read_in_blocks_of_the_decode_batch_so_every_actor_gets_some(
    ray_local, tmp_path, overrides, largest, per_shard
):
    # shard 3: 200 rows in one file, shard 5: 50. Decode batches of 32 (tiny.yaml): 7 blocks of 28-29
    # rows, and as many of shard 5 (Ray splits every file into the same number of blocks).
    # ray.block_rows=100: 2 blocks of each shard.
    state = staged_run(tmp_path, {3: 200, 5: 50})
    config = load_config("conf/tiny.yaml", ("catalog.path=unused",) + overrides)
    ds = read_shards(state, [3, 5], config).materialize()
    sizes = [len(batch[S.ITEM_ID]) for batch in ds.iter_batches(batch_size=None)]  # one per block
    assert sum(sizes) == 250 and max(sizes) == largest
    assert len(sizes) == 2 * per_shard
    by_shard = {}
    for row in ds.iter_rows():
        by_shard.setdefault(int(row[S.SHARD_ID]), set()).add(row[S.ITEM_ID])
    assert {k: len(v) for k, v in by_shard.items()} == {3: 200, 5: 50}
    assert all(item.startswith(f"s{shard}-") for shard, items in by_shard.items() for item in items)


def test_block_rows_must_be_positive():
    with pytest.raises(ConfigError, match="ray.block_rows must be > 0"):
        load_config("conf/tiny.yaml", ("catalog.path=unused", "ray.block_rows=0"))
