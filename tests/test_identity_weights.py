"""Local weights count by content in model_version: a checkpoint overwritten in place is a new recipe."""

from __future__ import annotations

import os
import shutil

import torch

from vlclip_core.config import load_config
from vlclip_core.models.tiny import tiny_overrides


def _config(tiny_models, *extra):
    return load_config("conf/tiny.yaml", tiny_overrides(tiny_models) + extra)


def test_a_clip_checkpoint_overwritten_in_place_changes_model_version(tiny_models, tmp_path):
    checkpoint = str(tmp_path / "clip.pt")
    shutil.copy(tiny_models["clip_checkpoint"], checkpoint)
    before = _config(tiny_models, f"models.clip.pretrained={checkpoint}").model_version
    assert _config(tiny_models, f"models.clip.pretrained={checkpoint}").model_version == before
    state = torch.load(checkpoint, map_location="cpu")
    weights = state.get("state_dict", state)
    name = next(k for k, v in weights.items() if torch.is_tensor(v) and v.is_floating_point())
    weights[name] = weights[name] + 0.01  # fine-tuned further, saved under the same name
    torch.save(state, checkpoint)
    assert _config(tiny_models, f"models.clip.pretrained={checkpoint}").model_version != before


def test_a_detector_directory_edited_in_place_changes_model_version(tiny_models, tmp_path):
    detector = tmp_path / "detector"
    shutil.copytree(tiny_models["detector"], detector)
    before = _config(tiny_models, f"models.detector.path={detector}")
    version = before.model_version
    weights = sorted(p for p in os.listdir(detector) if p.endswith((".safetensors", ".bin")))[0]
    with open(detector / weights, "r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        fh.write(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    after = _config(tiny_models, f"models.detector.path={detector}")
    assert after.model_version != version
