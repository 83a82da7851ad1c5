"""Driver-side model checks: every bad model path or hub id is named before any Spark or Ray work."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from vlclip_core.config import ConfigError, load_config
from vlclip_core.models.tiny import tiny_overrides
from vlclip_core.run.preflight import check_models


def files_under(root: str) -> dict:
    """Every file below `root` with its modification time: what a build would change."""
    return {
        os.path.join(d, name): os.stat(os.path.join(d, name)).st_mtime_ns
        for d, _, names in os.walk(root)
        for name in names
    }


def test_the_tiny_models_pass_untouched_and_fail_without_their_config(tiny_models, tmp_path):
    overrides = tiny_overrides(tiny_models) + ("profile=custom",)
    root = os.path.dirname(tiny_models["detector"].rstrip("/"))
    before = files_under(root)
    assert check_models(load_config("conf/tiny.yaml", overrides)) is None
    assert files_under(root) == before and len(before) > 5  # checked, not rebuilt
    detector = tmp_path / "detector"
    shutil.copytree(tiny_models["detector"], detector, ignore=shutil.ignore_patterns("config.json"))
    expected = f"models.detector.path='{re.escape(str(detector))}' has no config.json$"
    with pytest.raises(ConfigError, match=expected):
        check_models(load_config("conf/tiny.yaml", overrides + (f"models.detector.path={detector}",)))


def test_every_missing_model_is_named_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config(
        "conf/tiny.yaml",
        (
            "profile=custom",
            f"models.detector.path={tmp_path}/nowhere/detector",
            "models.llm.path=acme/no-such-llm",
            f"models.clip.pretrained={tmp_path}/clip.pt",
            f"models.clip.config_dir={tmp_path}/arch",
        ),
    )
    with pytest.raises(ConfigError) as err:
        check_models(config)
    message = str(err.value)
    assert f"models.detector.path='{tmp_path}/nowhere/detector' does not exist" in message
    assert (
        "models.llm.path='acme/no-such-llm' is not a local directory and not in the Hugging Face cache"
        in message
    )
    assert f"models.clip.pretrained='{tmp_path}/clip.pt' is not a file" in message
    assert f"models.clip.config_dir='{tmp_path}/arch' is not a directory" in message


def test_a_directory_without_weights_is_refused(tmp_path, tiny_models):
    (tmp_path / "llm").mkdir()
    config = load_config(
        "conf/tiny.yaml",
        tiny_overrides(tiny_models)
        + ("profile=custom", f"models.llm.path={tmp_path / 'llm'}", "models.llm.gguf_file=model.gguf"),
    )
    with pytest.raises(ConfigError, match="models.llm.path=.* has no model.gguf"):
        check_models(config)


def test_the_tiny_profile_builds_its_models_on_first_use(tmp_path, monkeypatch):
    """conf/tiny.yaml run in a fresh directory: models/tiny does not exist yet and is built."""
    monkeypatch.chdir(tmp_path)
    config = load_config(os.path.join(os.path.dirname(os.path.dirname(__file__)), "conf", "tiny.yaml"))
    check_models(config)
    assert os.path.isfile(tmp_path / "models" / "tiny" / "detector" / "config.json")
    assert os.path.isfile(config.models.clip.pretrained) and os.path.isdir(config.models.llm.path)
    assert config.model_version.startswith("vlclip-tiny-")
