"""Config: profiles parse and validate, overrides apply, bad values fail with the value named."""
from __future__ import annotations

import pytest

from vlclip_core.config import ConfigError, load_config


def test_prod_profile_parses_and_validates():
    config = load_config("conf/prod.yaml")
    assert config.models.clip.model_name == "ViT-L-14" and config.models.llm.backend == "openai"
    assert config.stages.grounding.num_gpus == 1 and config.stages.clip.num_gpus == 1
    assert config.ray.address == "auto" and config.spark.master is None
    assert config.models.llm.api_key_env == "VLCLIP_LLM_API_KEY"
    assert config.model_version.startswith("vit-l-14-")


def test_tiny_profile_parses_with_overrides_typed_from_yaml():
    config = load_config("conf/tiny.yaml", ("catalog.filter=product_type = 'handbag'", "stages.clip.batch_size=7",
                                            "images.allowed_schemes=[http, https]", "ray.num_cpus=3"))
    assert config.catalog.filter == "product_type = 'handbag'"
    assert config.stages.clip.batch_size == 7 and config.images.allowed_schemes == ["http", "https"]
    assert config.ray.num_cpus == 3.0 and isinstance(config.ray.num_cpus, float)


def test_model_version_follows_the_recipe_not_the_resources():
    base = load_config("conf/tiny.yaml")
    assert load_config("conf/tiny.yaml", ("stages.clip.batch_size=64",)).model_version == base.model_version
    for change in ("models.clip.pretrained=other.pt", "models.llm.prompt_version=v2",
                   "models.detector.box_threshold=0.4", "models.clip.image_weight=0.7"):
        assert load_config("conf/tiny.yaml", (change,)).model_version != base.model_version, change


@pytest.mark.parametrize("override, message", [
    ("job.mode=nightly", "job.mode must be one of incremental, backfill; got 'nightly'"),
    ("stages.grounding.batch_size=0", "stages.grounding.batch_size must be > 0, got 0"),
    ("stages.clip.num_gpus=-1", "stages.clip: num_cpus/num_gpus must be >= 0"),
    ("models.detector.box_threshold=1.5", "models.detector.box_threshold must be in [0, 1), got 1.5"),
    ("models.clip.precision=fp8", "models.clip.precision must be one of fp32, fp16, bf16; got 'fp8'"),
    ("stages.clip.batchsize=3", "unknown config key(s) stages.clip.batchsize"),
    ("job.shard_size=many", "job.shard_size must be int, got 'many'"),
    ("models.llm.backend=openai", "models.llm.backend=openai needs models.llm.base_url and models.llm.model"),
    ("nonsense", "--set expects key=value, got 'nonsense'"),
])
def test_bad_values_fail_with_the_key_and_value_named(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("conf/tiny.yaml", (override,))
    assert message in str(err.value)


def test_catalog_location_is_required():
    with pytest.raises(ConfigError, match="catalog.path"):
        load_config(None, ("models.llm.path=x",))
