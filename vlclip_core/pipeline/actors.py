"""The stage actors: which class runs each stage (built-in or `stages.<name>.impl`), hosted once per actor."""

from __future__ import annotations

import importlib
import logging
import sys
import time

from vlclip_core.config import VlclipConfig
from vlclip_core.config.sections import MODEL_STAGES
from vlclip_core.pipeline.heartbeat import beating, register_current_actor

log = logging.getLogger(__name__)


STAGE_CLASSES = {
    "decode": "vlclip_core.stages.decode:DecodeStage",
    "grounding": "vlclip_core.stages.grounding:GroundingStage",
    "enrichment": "vlclip_core.stages.enrichment:EnrichmentStage",
    "clip": "vlclip_core.stages.clip_encode:ClipStage",
}


def load_class(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class StageActor:
    """Hosts one stage in a Ray actor: sets torch threads, builds the stage (and its model) once."""

    stage_name = ""

    def __init__(self, config: VlclipConfig, threads: int, heartbeat=None):
        start = time.monotonic()
        self.stage = build_stage(config, self.stage_name, heartbeat)
        set_torch_threads(threads)
        self.heartbeat = heartbeat
        register_current_actor(heartbeat, (self.stage_name,), time.monotonic() - start)

    def __call__(self, batch):
        return beating(self.heartbeat, self.stage_name, self.stage, batch)


class GroundingActor(StageActor):
    stage_name = "grounding"


class EnrichmentActor(StageActor):
    stage_name = "enrichment"


class ClipActor(StageActor):
    stage_name = "clip"


ACTORS = {"grounding": GroundingActor, "enrichment": EnrichmentActor, "clip": ClipActor}


class FusedActor:
    """Hosts grounding, enrichment and CLIP in one actor and runs a batch through them in turn (the
    fused layout: on CPUs a core runs a whole chain). Each stage keeps its own deadlines, heartbeat beats
    and busy seconds. The models load one after another: transformers' lazy imports are not
    thread-safe (threads here raised ImportError for AutoModelForCausalLM); the pool's actors load in
    parallel, each in its own process, as the split layout's pools do."""

    def __init__(self, config: VlclipConfig, threads: int, heartbeat=None):
        start = time.monotonic()
        self.stages = [(name, build_stage(config, name, heartbeat)) for name in MODEL_STAGES]
        set_torch_threads(threads)
        self.heartbeat = heartbeat
        register_current_actor(heartbeat, MODEL_STAGES, time.monotonic() - start)

    def __call__(self, batch):
        for name, stage in self.stages:
            batch = beating(self.heartbeat, name, stage, batch)
        return batch


def set_torch_threads(threads: int) -> None:
    """Torch's intra-op threads of this actor, where its stages brought torch in: a stage that computes
    nothing itself (enrichment as a client of an LLM service) never imports it, which spares each of
    its actors 2-3 s of start-up and about 250 MB."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def build_stage(config: VlclipConfig, name: str, heartbeat=None):
    """The stage `name` of config (its class, its model), with its deadlines."""
    return with_deadlines(stage_class(config, name)(config), config, name, heartbeat)


def stage_class(config: VlclipConfig, name: str):
    """The stage's class: `stages.<name>.impl` when configured, else the built-in one."""
    return load_class(getattr(config.stages, name).impl or STAGE_CLASSES[name])


def decode_task(batch, config: VlclipConfig, heartbeat=None):
    """Decode runs as plain CPU tasks: the stage is cheap to build, so it is built per batch."""
    return beating(heartbeat, "decode", build_stage(config, "decode", heartbeat), batch)


def with_deadlines(stage, config: VlclipConfig, name: str, heartbeat=None):
    """Give a stage its batch and item deadlines (stages.<name>), beating the heartbeat per lone item."""
    batch_s, item_s = config.stage_deadlines(name)
    beat = (lambda: heartbeat.touch.remote()) if heartbeat is not None else None
    stage.set_deadlines(batch_s, item_s, beat)
    return stage
