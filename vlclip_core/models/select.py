"""Which model a config names, built without importing torch for the null profile.

The stages, evaluation and tools build their detector and CLIP encoder here. The null models
(conf/null.yaml) come from `models.null`, which needs numpy only, so a null run's actors never pay
for importing torch, open_clip or transformers; every other kind goes through its real loader.
"""

from __future__ import annotations

from vlclip_core.config import ClipConfig, DetectorConfig
from vlclip_core.models.null import NullClipEncoder, NullDetector, is_null_clip


def build_detector(cfg: DetectorConfig, device: str = "auto"):
    """The detector of `cfg.kind`: `NullDetector` for `null`, else `models.detector.load_detector`."""
    if cfg.kind == "null":
        return NullDetector(cfg)
    from vlclip_core.models.detector import load_detector

    return load_detector(cfg, device)


def build_clip(cfg: ClipConfig, device: str = "auto"):
    """The CLIP encoder of `cfg.model_name`: `NullClipEncoder` for `null[-<dim>]`, else
    `models.clip.load_clip`."""
    if is_null_clip(cfg.model_name):
        return NullClipEncoder(cfg.model_name)
    from vlclip_core.models.clip import load_clip

    return load_clip(cfg, device)
