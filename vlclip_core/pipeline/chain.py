"""The Ray Data chain over staged shards: read -> decode -> grounding -> enrichment -> CLIP -> writer."""

from __future__ import annotations

import dataclasses
import logging
from typing import List, Optional

import numpy as np

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import StageResources, VlclipConfig
from vlclip_core.pipeline.actors import ACTORS, FusedActor, decode_task
from vlclip_core.pipeline.pools import (
    Cluster,
    actor_strategy,
    decode_concurrency,
    pool_sizes,
    read_blocks,
    resolve_layout,
    task_cpus,
)
from vlclip_core.pipeline.shard_writer import write_shard_parts
from vlclip_core.run.state import RunState

log = logging.getLogger(__name__)


def build_dataset(
    state: RunState, shards: List[int], config: VlclipConfig, heartbeat=None, only_items: Optional[set] = None
):
    """Read the pending shards and chain the stages; each stage's resources come from config, the
    layout (a pool per model stage, or one fused pool) from `stages.layout` and the cluster.

    With `only_items`, only those item ids are read and every stage takes one item per batch (and
    one batch per actor at a time): the isolation pass for items of failed batches.
    """
    import ray

    read_cpus, _ = task_cpus(config.stages)
    ds = read_shards(state, shards, config)
    if only_items is not None:
        ds = ds.map_batches(
            _keep_items, fn_kwargs={"items": only_items}, batch_format="numpy", num_cpus=read_cpus
        )
        ds = ds.repartition(max(1, len(only_items)))  # a task takes a whole block: one item per block
        config = _one_item_per_batch(config)
    res = config.stages.decode
    ds = ds.map_batches(
        decode_task,
        fn_kwargs={"config": config, "heartbeat": heartbeat},
        batch_format="numpy",
        batch_size=res.batch_size,
        num_cpus=res.num_cpus,
        compute=ray.data.TaskPoolStrategy(size=decode_concurrency(res)),
        max_retries=config.ray.max_batch_retries,
    )
    cluster = Cluster.current()
    layout = resolve_layout(config.stages, cluster, remote_llm=config.models.llm.backend == "openai")
    sizes = pool_sizes(config.stages, layout, cluster)
    log.info(
        "pipeline layout %s on %g CPU(s) / %g GPU(s): %s", layout, cluster.cpus, cluster.gpus,
        ", ".join(f"{name} {low}-{high} actor(s)" for name, (low, high) in sizes.items()),
    )
    actors = {"fused": FusedActor} if layout == "fused" else ACTORS
    for name, actor in actors.items():
        ds = _add_actor_stage(ds, actor, getattr(config.stages, name), sizes[name], config, heartbeat)
    out_dir = storage.spark_path(state.path("output"))
    return ds.map_batches(
        write_shard_parts,
        fn_kwargs={"out_dir": out_dir},
        batch_format="numpy",
        batch_size=None,
        num_cpus=read_cpus,
        max_retries=config.ray.max_batch_retries,
    )


def read_shards(state: RunState, shards: List[int], config: VlclipConfig):
    """The staged rows of `shards` with their shard id, in blocks of `ray.block_rows` rows (unset: the
    decode batch size). Ray Data would read a small shard file as one block; split, the blocks spread
    over the decode tasks and every pool's actors instead of one of each."""
    import ray

    read_cpus, _ = task_cpus(config.stages)
    rows = [state.shards()[s] for s in shards]
    ds = ray.data.read_parquet(
        [storage.spark_path(state.shard_input(s)) for s in shards],
        partitioning=None,
        num_cpus=read_cpus,
        include_paths=True,
        override_num_blocks=read_blocks(rows, config.stages, config.ray.block_rows),
    )
    return ds.map_batches(_add_shard_id, batch_format="numpy", num_cpus=read_cpus)


def _add_actor_stage(ds, actor, res: StageResources, sizes, config: VlclipConfig, heartbeat):
    return ds.map_batches(
        actor,
        fn_constructor_args=(config, res.threads, heartbeat),
        batch_format="numpy",
        batch_size=res.batch_size,
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus or None,
        compute=actor_strategy(sizes, config.ray.max_tasks_in_flight_per_actor),
        # Restarts are unbounded and batch retries bounded: Ray Data (2.60) never
        # replaces an actor that ran out of restarts, so a fixed-size pool would keep
        # the dead actor and hang. A crash loop is caught by the stall detector.
        max_restarts=-1,
        max_task_retries=config.ray.max_batch_retries,
    )


def _one_item_per_batch(config: VlclipConfig) -> VlclipConfig:
    stages = dataclasses.replace(
        config.stages,
        **{
            name: dataclasses.replace(getattr(config.stages, name), batch_size=1)
            for name in S.STAGE_NAMES + ("fused",)
        },
    )
    return dataclasses.replace(
        config, stages=stages, ray=dataclasses.replace(config.ray, max_tasks_in_flight_per_actor=1)
    )


def _keep_items(batch, items: set):
    keep = np.array([i in items for i in batch[S.ITEM_ID]], dtype=bool)
    return {name: column[keep] for name, column in batch.items()}


def _add_shard_id(batch):
    """The shard id is the name of the directory a row was read from (shard_id=K)."""
    paths = batch.pop("path")
    batch[S.SHARD_ID] = np.array(
        [int(p.rsplit("shard_id=", 1)[1].split("/", 1)[0]) for p in paths], dtype=np.int32
    )
    return batch
