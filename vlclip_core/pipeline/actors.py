"""The stage actors: which class runs each stage (built-in or `stages.<name>.impl`), hosted once per actor."""

from __future__ import annotations

import importlib
import logging

from vlclip_core.config import VlclipConfig
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
        import torch

        torch.set_num_threads(threads)
        stage = stage_class(config, self.stage_name)(config)
        self.stage = with_deadlines(stage, config, self.stage_name, heartbeat)
        self.heartbeat = heartbeat
        register_current_actor(heartbeat)

    def __call__(self, batch):
        return beating(self.heartbeat, self.stage_name, self.stage, batch)


class GroundingActor(StageActor):
    stage_name = "grounding"


class EnrichmentActor(StageActor):
    stage_name = "enrichment"


class ClipActor(StageActor):
    stage_name = "clip"


ACTORS = {"grounding": GroundingActor, "enrichment": EnrichmentActor, "clip": ClipActor}


def stage_class(config: VlclipConfig, name: str):
    """The stage's class: `stages.<name>.impl` when configured, else the built-in one."""
    return load_class(getattr(config.stages, name).impl or STAGE_CLASSES[name])


def decode_task(batch, config: VlclipConfig, heartbeat=None):
    """Decode runs as plain CPU tasks: the stage is cheap to build, so it is built per batch."""
    stage = with_deadlines(stage_class(config, "decode")(config), config, "decode", heartbeat)
    return beating(heartbeat, "decode", stage, batch)


def with_deadlines(stage, config: VlclipConfig, name: str, heartbeat=None):
    """Give a stage its batch and item deadlines (stages.<name>), beating the heartbeat per lone item."""
    batch_s, item_s = config.stage_deadlines(name)
    beat = (lambda: heartbeat.touch.remote()) if heartbeat is not None else None
    stage.set_deadlines(batch_s, item_s, beat)
    return stage
