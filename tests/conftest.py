"""Session fixtures: one local Spark with Delta, one local Ray, tiny models and a sample catalog per test session."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402

from vlclip_core.config import load_config  # noqa: E402

TEST_ITEMS = 24


@pytest.fixture(scope="session")
def spark():
    from vlclip_core.config import SparkConfig
    from vlclip_core.spark_session import get_spark

    session = get_spark(SparkConfig(master="local[2]", app_name="vlclip-tests",
                                    conf={"spark.sql.shuffle.partitions": "2",
                                          "spark.default.parallelism": "2"}))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from vlclip_core.config import RayConfig
    from vlclip_core.pipeline import init_ray

    init_ray(RayConfig(address="local", num_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from vlclip_core.models.tiny import build_tiny_models

    return build_tiny_models(str(tmp_path_factory.mktemp("models")), seed=0)


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory):
    from vlclip_core.sample_catalog import make_sample_catalog

    root = tmp_path_factory.mktemp("sample")
    make_sample_catalog(str(root), n_items=TEST_ITEMS, seed=7)
    return root


def job_overrides(models: dict, catalog: str, warehouse: str) -> tuple:
    """Overrides that point the tiny profile at the test's models, catalog and warehouse."""
    from vlclip_core.models.tiny import tiny_overrides

    return tiny_overrides(models) + (
        f"catalog.path={catalog}",
        f"warehouse.path={warehouse}",
        "job.shard_size=10",
        "job.log_every_s=1",
        "ray.stall_timeout_s=300",
    )


@pytest.fixture
def make_config(tiny_models):
    """make_config(catalog, warehouse, *overrides) -> a validated tiny-profile VlclipConfig."""

    def _make(catalog, warehouse, *overrides):
        base = job_overrides(tiny_models, str(catalog), str(warehouse))
        return load_config("conf/tiny.yaml", base + tuple(overrides))

    return _make
