"""The pipeline's layout and actor pools: fixed sizes from config, or Ray Data autoscaling pools sized
to the cluster (`stages.<name>.num_actors: auto`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from vlclip_core.config import StageResources, StagesConfig
from vlclip_core.config.sections import AUTO, MODEL_STAGES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cluster:
    """The logical resources Ray schedules on (all nodes together)."""

    cpus: float
    gpus: float

    @classmethod
    def current(cls) -> "Cluster":
        import ray

        total = ray.cluster_resources()
        return cls(cpus=float(total.get("CPU", 0.0)), gpus=float(total.get("GPU", 0.0)))


def resolve_layout(stages: StagesConfig, cluster: Cluster, remote_llm: bool = False) -> str:
    """split or fused. `auto` fuses the model stages when every one of them computes on local CPUs: no
    stage asks for a GPU, the cluster has none, and the LLM is not a remote service (a core runs the
    whole chain best: no hand-off, no stage waiting on another's core). An enrichment stage waiting on
    an LLM service keeps its own pool, which grows to overlap the waits while the other stages compute."""
    if stages.layout != AUTO:
        return stages.layout
    return "split" if stages.wants_gpus() or cluster.gpus > 0 or remote_llm else "fused"


def task_cpus(stages: StagesConfig) -> Tuple[float, float]:
    """(CPUs of a read / write task, CPUs of a decode task)."""
    return min(stages.decode.num_cpus, 1.0) or 0.25, stages.decode.num_cpus


def pool_sizes(stages: StagesConfig, layout: str, cluster: Cluster) -> Dict[str, Tuple[int, int]]:
    """(min, max) actors of each actor stage of the layout.

    A fixed `num_actors` is (n, n). An `auto` pool goes from min_actors to max_actors or, unset, to as
    many actors as fit beside one read, one decode and one write task and the other pools' minimums: a
    pool can never take the CPUs the pipeline's tasks need (on small nodes that would stall the run).
    A fused CPU pool holds at most one actor per core.
    """
    names = ("fused",) if layout == "fused" else MODEL_STAGES
    io_cpus, decode_cpus = task_cpus(stages)
    reserved = 2 * io_cpus + decode_cpus
    sizes = {}
    for name in names:
        res = getattr(stages, name)
        others = sum(_min_cpus(getattr(stages, other)) for other in names if other != name)
        sizes[name] = _bounds(res, cluster, cluster.cpus - reserved - others, one_per_core=name == "fused")
    return sizes


def _min_cpus(res: StageResources) -> float:
    return (res.min_actors if res.num_actors == AUTO else res.num_actors) * res.num_cpus


def _bounds(res: StageResources, cluster: Cluster, spare_cpus: float, one_per_core: bool) -> Tuple[int, int]:
    if res.num_actors != AUTO:
        return res.num_actors, res.num_actors
    low = res.min_actors
    high = res.max_actors if res.max_actors is not None else _fits(res, cluster, spare_cpus, one_per_core)
    return low, max(low, high)


def _fits(res: StageResources, cluster: Cluster, spare_cpus: float, one_per_core: bool) -> int:
    limits = []
    if res.num_gpus > 0:
        limits.append(math.floor(cluster.gpus / res.num_gpus + 1e-9))
    if res.num_cpus > 0:
        limits.append(math.floor(max(spare_cpus, 0.0) / res.num_cpus + 1e-9))
    if one_per_core or not limits:
        limits.append(max(1, math.floor(cluster.cpus)))
    return max(1, min(limits))


def actor_strategy(sizes: Tuple[int, int], max_in_flight: int):
    import ray

    low, high = sizes
    if low == high:
        return ray.data.ActorPoolStrategy(size=low, max_tasks_in_flight_per_actor=max_in_flight)
    return ray.data.ActorPoolStrategy(
        min_size=low, max_size=high, max_tasks_in_flight_per_actor=max_in_flight
    )


def read_blocks(shard_rows: List[int], stages: StagesConfig, block_rows: Optional[int]) -> int:
    """Blocks to read staged shards of `shard_rows` rows into, none holding more than `block_rows`
    (unset: the decode batch size): a decode task then takes two or so (its batch) and the pools
    downstream get as many blocks as their actors can take. Spark writes a shard as one file, and Ray
    Data splits each file's rows evenly into blocks / files blocks, so the largest shard sets the split.
    (Blocks just over a batch would leave a batch of one or two rows in every block.)"""
    per_file = math.ceil(max(shard_rows, default=0) / (block_rows or stages.decode.batch_size))
    return max(1, len(shard_rows) * per_file)


def decode_concurrency(res: StageResources) -> Optional[int]:
    """Parallel decode tasks: the configured number, or None (auto: as many as Ray has CPUs for)."""
    return None if res.num_actors == AUTO else res.num_actors
