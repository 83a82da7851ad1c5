"""Driver-side checks before any Spark or Ray work: every model path or hub id resolves."""

from __future__ import annotations

import logging
import os
from typing import List, Optional

from vlclip_core.config import ConfigError, VlclipConfig

log = logging.getLogger(__name__)

TINY_PROFILE = "tiny"
_HUB_FILE = "config.json"


def check_models(config: VlclipConfig) -> None:
    """Raise ConfigError naming every model path/id that cannot load; build the tiny profile's models first.

    Local paths must exist (a directory with config.json, the gguf file, the CLIP checkpoint file);
    a hub id ("org/name") must be in the local Hugging Face cache when HF_HUB_OFFLINE is set.
    """
    if config.profile == TINY_PROFILE:
        build_missing_tiny_models(config)
    problems = _model_problems(config)
    if problems:
        raise ConfigError("model(s) cannot be loaded: " + "; ".join(problems))


def build_missing_tiny_models(config: VlclipConfig) -> None:
    """Build the tiny models into the directory the profile names, when any of them is missing."""
    from vlclip_core.models.tiny import build_tiny_models

    models = config.models
    wanted = [
        models.detector.path,
        models.llm.path,
        models.clip.pretrained or "",
        models.clip.config_dir or "",
    ]
    if all(os.path.exists(p) for p in wanted if p):
        return
    out = os.path.dirname(models.detector.path.rstrip("/")) or "models/tiny"
    log.info("tiny profile: building the tiny models into %s (first use)", out)
    build_tiny_models(out)


def _model_problems(config: VlclipConfig) -> List[str]:
    models = config.models
    problems = []
    if models.detector.kind != "null":
        problems.append(_hub_or_dir("models.detector.path", models.detector.path))
    if models.llm.backend == "transformers":
        problems.append(_hub_or_dir("models.llm.path", models.llm.path, models.llm.gguf_file))
    problems += _clip_problems(config)
    return [p for p in problems if p]


def _hub_or_dir(name: str, path: str, weights_file: Optional[str] = None) -> Optional[str]:
    if os.path.isdir(path):
        needed = weights_file or _HUB_FILE
        return None if os.path.isfile(os.path.join(path, needed)) else f"{name}={path!r} has no {needed}"
    if os.path.exists(path):
        return f"{name}={path!r} is not a directory"
    if not _looks_like_hub_id(path):
        return f"{name}={path!r} does not exist (the tiny profile's models: `make models`)"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") and not _in_hub_cache(
        path, weights_file
    ):
        return (
            f"{name}={path!r} is not a local directory and not in the Hugging Face cache "
            "(HF_HUB_OFFLINE is set)"
        )
    return None


def _looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not path.startswith((".", "~"))
        and os.sep not in path.replace("/", "")
    )


def _in_hub_cache(repo_id: str, filename: Optional[str]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename or _HUB_FILE), str)


def _clip_problems(config: VlclipConfig) -> List[str]:
    clip = config.models.clip
    problems = []
    if clip.config_dir and not os.path.isdir(clip.config_dir):
        problems.append(f"models.clip.config_dir={clip.config_dir!r} is not a directory")
    pretrained = clip.pretrained or ""
    if _looks_like_file(pretrained) and not os.path.isfile(pretrained):
        problems.append(f"models.clip.pretrained={pretrained!r} is not a file")
    return problems


def _looks_like_file(value: str) -> bool:
    return "/" in value or os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))
