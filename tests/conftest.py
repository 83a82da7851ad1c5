"""Session fixtures: one local Spark with Delta, one local Ray, tiny models and a sample catalog."""

from __future__ import annotations

import os

import pytest
from job_helpers import REPO, TEST_ITEMS, TEST_LLM_KEY, TEST_LLM_KEY_ENV, job_overrides

from vlclip_core.config import load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray workers inherit the environment Ray starts with: they import tests.fault_stages from the repo,
# and read the LLM key from the environment like production nodes do.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
os.environ[TEST_LLM_KEY_ENV] = TEST_LLM_KEY


@pytest.fixture(scope="session")
def spark():
    from vlclip_core.config import SparkConfig
    from vlclip_core.warehouse.spark_session import get_spark

    session = get_spark(
        SparkConfig(
            master="local[2]",
            app_name="vlclip-tests",
            conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"},
        )
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from vlclip_core.config import RayConfig
    from vlclip_core.pipeline.ray_init import init_ray

    init_ray(RayConfig(address="local", num_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from vlclip_core.models.tiny import build_tiny_models

    return build_tiny_models(str(tmp_path_factory.mktemp("models")), seed=0)


@pytest.fixture(scope="session")
def paths(tiny_models):
    """The tiny model paths, as the model and stage tests call them."""
    return tiny_models


@pytest.fixture(scope="session")
def encoder(tiny_models):
    """The tiny CLIP encoder, loaded once through the real loader."""
    from models_helpers import tiny_config

    from vlclip_core.models.clip import load_clip

    return load_clip(tiny_config(tiny_models).models.clip, "cpu")


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory):
    from vlclip_core.tools.sample_catalog import make_sample_catalog

    root = tmp_path_factory.mktemp("sample")
    make_sample_catalog(str(root), n_items=TEST_ITEMS, seed=7)
    return root


@pytest.fixture
def make_config(tiny_models):
    """make_config(catalog, warehouse, *overrides) -> a validated tiny-profile VlclipConfig."""

    def _make(catalog, warehouse, *overrides):
        base = job_overrides(tiny_models, str(catalog), str(warehouse))
        return load_config("conf/tiny.yaml", base + tuple(overrides))

    return _make
