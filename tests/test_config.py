"""Config: profiles parse and validate, overrides apply, bad values fail with the value named."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil

import pytest

from vlclip_core.config import (
    ClipConfig,
    ConfigError,
    DetectorConfig,
    ImageConfig,
    LLMConfig,
    ModelsConfig,
    load_config,
)


def test_prod_profile_parses_and_validates():
    config = load_config("conf/prod.yaml")
    assert config.models.clip.model_name == "ViT-L-14" and config.models.llm.backend == "openai"
    assert config.stages.grounding.num_gpus == 1 and config.stages.clip.num_gpus == 1
    assert config.ray.address == "auto" and config.spark.master is None
    assert config.models.llm.api_key_env == "VLCLIP_LLM_API_KEY"
    assert config.model_version.startswith("vit-l-14-")


def test_tiny_profile_parses_with_overrides_typed_from_yaml():
    config = load_config(
        "conf/tiny.yaml",
        (
            "catalog.filter=product_type = 'handbag'",
            "stages.clip.batch_size=7",
            "images.allowed_schemes=[http, https]",
            "ray.num_cpus=3",
        ),
    )
    assert config.catalog.filter == "product_type = 'handbag'"
    assert config.stages.clip.batch_size == 7 and config.images.allowed_schemes == ["http", "https"]
    assert config.ray.num_cpus == 3.0 and isinstance(config.ray.num_cpus, float)


def test_model_version_follows_the_recipe_not_the_resources():
    base = load_config("conf/tiny.yaml")
    assert load_config("conf/tiny.yaml", ("stages.clip.batch_size=64",)).model_version == base.model_version
    for change in (
        "models.clip.pretrained=other.pt",
        "models.detector.prompt_template='{product_type} .'",
        "models.detector.box_threshold=0.4",
        "models.clip.image_weight=0.7",
        "models.llm.min_chars=10",
        "models.llm.max_chars=500",
        "models.llm.max_input_chars=100",
        "models.llm.temperature=0.3",
        "models.llm.repetition_penalty=1.0",
        "models.llm.no_repeat_ngram_size=0",
        "models.llm.stop=[]",
    ):
        assert load_config("conf/tiny.yaml", (change,)).model_version != base.model_version, change


_MODEL_SECTIONS = (DetectorConfig, LLMConfig, ClipConfig, ModelsConfig, ImageConfig)


@pytest.mark.parametrize("section", _MODEL_SECTIONS, ids=lambda c: c.__name__)
def test_every_model_field_is_in_the_identity_or_listed_outside_it(section):
    names = {f.name for f in dataclasses.fields(section)}
    identity, outside = set(section.IDENTITY), set(section.OUTSIDE_IDENTITY)
    assert not identity & outside, (
        f"{section.__name__}: both in and outside the identity: {identity & outside}"
    )
    unlisted = names - identity - outside
    assert not unlisted, (
        f"{section.__name__}: decide whether {sorted(unlisted)} change an output: add them to "
        f"IDENTITY, or to OUTSIDE_IDENTITY with the reason"
    )
    assert not (identity | outside) - names, f"{section.__name__}: lists fields it does not have"


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1 if isinstance(value, int) else value + 0.01
    return f"{value or ''}-b"


def _section(config, section):
    return {
        DetectorConfig: config.models.detector,
        LLMConfig: config.models.llm,
        ClipConfig: config.models.clip,
        ModelsConfig: config.models,
        ImageConfig: config.images,
    }[section]


@pytest.mark.parametrize("section", _MODEL_SECTIONS, ids=lambda c: c.__name__)
def test_each_identity_field_changes_model_version_and_no_other_does(section):
    base = load_config("conf/tiny.yaml")
    for name in section.IDENTITY + tuple(section.OUTSIDE_IDENTITY):
        if name in ("prompt_version", "prompt_dir", "config_dir", "detector", "llm", "clip"):
            continue  # directories whose files count by content: the tests below; sections: their own case
        config = copy.deepcopy(base)
        setattr(_section(config, section), name, _changed(getattr(_section(base, section), name)))
        changed = config.model_version != base.model_version
        assert changed == (name in section.IDENTITY), f"{section.__name__}.{name}"


def _prompt_copy(tmp_path, name="prompts"):
    shutil.copytree("conf/prompts", tmp_path / name)
    return tmp_path / name


def test_prompt_files_enter_model_version_and_text_hash_by_content(tmp_path):
    from vlclip_core.config import llm_identity

    base = load_config("conf/tiny.yaml")
    same = load_config("conf/tiny.yaml", (f"models.llm.prompt_dir={_prompt_copy(tmp_path)}",))
    assert (same.model_version, llm_identity(same)) == (base.model_version, llm_identity(base))
    edited = _prompt_copy(tmp_path, "edited")
    summarise = edited / "v1" / "summarise.txt"
    summarise.write_text(summarise.read_text() + "\nMention the material.\n")
    changed = load_config("conf/tiny.yaml", (f"models.llm.prompt_dir={edited}",))
    assert changed.model_version != base.model_version and llm_identity(changed) != llm_identity(base)
    shutil.copytree(edited / "v1", edited / "v2")
    v2 = load_config("conf/tiny.yaml", (f"models.llm.prompt_dir={edited}", "models.llm.prompt_version=v2"))
    assert v2.model_version != changed.model_version


def test_a_custom_clip_architecture_enters_model_version_by_content(tiny_models, tmp_path):
    from vlclip_core.models.tiny import tiny_overrides

    base = load_config("conf/tiny.yaml", tiny_overrides(tiny_models))
    copy_dir = tmp_path / "arch"
    shutil.copytree(tiny_models["clip_config_dir"], copy_dir)
    moved = load_config(
        "conf/tiny.yaml", tiny_overrides(tiny_models) + (f"models.clip.config_dir={copy_dir}",)
    )
    assert moved.model_version == base.model_version
    arch = copy_dir / f"{base.models.clip.model_name}.json"
    spec = json.loads(arch.read_text())
    spec["embed_dim"] = spec["embed_dim"] * 2
    arch.write_text(json.dumps(spec))
    assert (
        load_config(
            "conf/tiny.yaml", tiny_overrides(tiny_models) + (f"models.clip.config_dir={copy_dir}",)
        ).model_version
        != base.model_version
    )


def test_the_detector_identity_follows_the_prompt_template():
    from vlclip_core.config import detector_identity

    base = load_config("conf/tiny.yaml")
    other = load_config("conf/tiny.yaml", ("models.detector.prompt_template='a photo of a {product_type}.'",))
    assert detector_identity(other) != detector_identity(base)


@pytest.mark.parametrize(
    "override, message",
    [
        ("job.mode=nightly", "job.mode must be one of incremental, backfill; got 'nightly'"),
        ("stages.grounding.batch_size=0", "stages.grounding.batch_size must be > 0, got 0"),
        ("stages.clip.num_gpus=-1", "stages.clip: num_cpus/num_gpus must be >= 0"),
        ("models.detector.box_threshold=1.5", "models.detector.box_threshold must be in [0, 1), got 1.5"),
        ("models.clip.precision=fp8", "models.clip.precision must be one of fp32, fp16, bf16; got 'fp8'"),
        ("stages.clip.batchsize=3", "unknown config key(s) stages.clip.batchsize"),
        ("job.shard_size=many", "job.shard_size must be int, got 'many'"),
        (
            "models.llm.backend=openai",
            "models.llm.backend=openai needs models.llm.base_url and models.llm.model",
        ),
        ("nonsense", "--set expects key=value, got 'nonsense'"),
        ("stages.clip.batch_size=[1, 2", "--set stages.clip.batch_size: '[1, 2' is not a valid YAML value"),
        ("models.llm.prompt_version=v9", "models.llm.prompt_version 'v9': no prompt directory"),
        (
            "models.detector.prompt_template='{title}.'",
            "models.detector.prompt_template may only use {product_type}",
        ),
        (
            "models.detector.prompt_template='{}'",
            "models.detector.prompt_template may only use {product_type}",
        ),
        ("models.detector.prompt_template=' '", "models.detector.prompt_template renders an empty prompt"),
        ("models.llm.repetition_penalty=0", "models.llm.repetition_penalty must be > 0, got 0"),
        ("models.llm.no_repeat_ngram_size=-1", "models.llm.no_repeat_ngram_size must be >= 0, got -1"),
        ("models.llm.frequency_penalty=2.5", "models.llm.frequency_penalty must be in [-2, 2], got 2.5"),
        ("models.llm.stop=['']", "models.llm.stop must be a list of at most 4 non-empty strings, got ['']"),
        ("models.llm.stop=[a, b, c, d, e]", "models.llm.stop must be a list of at most 4 non-empty strings"),
        ("models.llm.stop=END", "models.llm.stop must be list, got 'END'"),
    ],
)
def test_bad_values_fail_with_the_key_and_value_named(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("conf/tiny.yaml", (override,))
    assert message in str(err.value)


def test_catalog_location_is_required():
    with pytest.raises(ConfigError, match="catalog.path"):
        load_config(None, ("models.llm.path=x",))


def test_a_profile_that_is_not_yaml_fails_with_its_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("catalog:\n  path: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid YAML"):
        load_config(str(bad))


def test_a_bad_prompt_file_fails_at_load_on_the_driver(tmp_path):
    prompts = _prompt_copy(tmp_path)
    (prompts / "v1" / "refine.txt").write_text("Rewrite {titel}.")
    with pytest.raises(ConfigError, match=r"refine.txt has unknown placeholder\(s\) \{titel\}"):
        load_config("conf/tiny.yaml", (f"models.llm.prompt_dir={prompts}",))


def test_an_installed_vlclip_finds_its_prompts_without_the_repository(tmp_path):
    """`pip install .` ships conf/prompts as vlclip_core/prompts: from a wheel installed elsewhere, run
    from another directory, the default prompt_dir loads the packaged templates."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "wheel"),
            repo,
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "wheel").glob("vlclip-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "from vlclip_core.config import LLMConfig; from vlclip_core.llm.prompts import load_prompts, "
        "resolve_prompt_dir; c = LLMConfig(path='x'); print(resolve_prompt_dir(c.prompt_dir)); "
        "print(sorted(load_prompts(c).templates))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")),
    )
    where, steps = out.stdout.splitlines()
    assert where == str(tmp_path / "site" / "vlclip_core" / "prompts")
    assert steps == "['evaluate', 'refine', 'summarise']"


def test_upgrading_vlclip_keeps_the_model_version_of_an_unchanged_recipe():
    """The production profile's model_version as released: a field added to the recipe identity later
    (IDENTITY_ADDED) must not change it at its default, or every upgrade would re-embed the catalog.
    Change this value only with a release note that says the upgrade re-embeds."""
    config = load_config("conf/prod.yaml", ("catalog.path=unused",))
    assert config.model_version == "vit-l-14-df7eeca8f125"
    yes_no = load_config("conf/prod.yaml", ("catalog.path=unused", "models.llm.verdict_format=yes_no"))
    assert yes_no.model_version != config.model_version
