"""The training profile: YAML + overrides, embed.* routing, validation naming the bad value."""

import pytest

from vlclip_core.config import ConfigError
from vlclip_core.train.config import load_train_config


def test_profiles_load_and_embed_overrides_reach_the_embedding_profile():
    cfg = load_train_config(
        "conf/train_tiny.yaml",
        ("train.steps=7", "embed.warehouse.path=/tmp/wh", "data.ablation=no_grounding"),
    )
    assert cfg.train.steps == 7 and cfg.data.ablation == "no_grounding" and not cfg.data.grounded
    assert cfg.data.enriched
    assert cfg.embed().warehouse.path == "/tmp/wh"
    assert cfg.embed().models.clip.model_name == "vlclip-tiny"
    prod = load_train_config("conf/train_prod.yaml")
    assert prod.train.use_gpu and prod.train.num_workers == 8 and prod.embed_profile == "conf/prod.yaml"


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.ablation=no_text", "data.ablation must be one of"),
        ("data.eval_pct=0", "data.eval_pct must be in 1..99, got 0"),
        ("train.batch_size=1", "train.batch_size must be >= 2"),
        ("train.precision=fp16", "train.precision must be one of fp32, bf16; got 'fp16'"),
        ("train.steps=0", "train.steps must be > 0, got 0"),
        ("train.stepz=3", "unknown config key(s) train.stepz"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_train_config("conf/train_tiny.yaml", (override,))
