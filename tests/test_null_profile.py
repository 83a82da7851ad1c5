"""The null-model profile runs the real job (stages, Ray, Delta) with hash-derived vectors, boxes, texts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from job_helpers import REPO

from vlclip_core.config import ClipConfig, ConfigError, DetectorConfig, load_config
from vlclip_core.models.null import NullChatBackend, NullClipEncoder, NullDetector
from vlclip_core.models.select import build_clip, build_detector
from vlclip_core.run.job import run_job
from vlclip_core.tools.sample_catalog import read_catalog, write_catalog
from vlclip_core.warehouse.tables import Tables

ITEMS = 12


def test_null_models_are_deterministic_and_shaped_like_the_real_ones():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    other = image.copy()
    other[0, 0, 0] ^= 1
    clip = NullClipEncoder("null-64")
    vectors = clip.encode_images([image, image, other])
    assert vectors.shape == (3, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert np.array_equal(vectors[0], vectors[1]) and not np.allclose(vectors[0], vectors[2])
    assert np.array_equal(clip.encode_texts(["red mug"]), clip.encode_texts(["red mug"]))
    config = load_config("conf/null.yaml", ("catalog.path=unused",))
    [[box]] = NullDetector(config.models.detector).detect([image], "mug.")
    x0, y0, x1, y1 = box.box
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and box.score >= config.models.detector.box_threshold
    reply = NullChatBackend(config.models.llm).chat([[{"role": "user", "content": "Red  mug\n colour: red"}]])
    assert reply == ["Red mug colour: red"]
    # a prompt with a data block: the reply is the block's values, the shape of a short summary
    prompt = "Describe it.\n\n<catalog_data>\nTitle: Red  mug\nAttributes: colour: red\n</catalog_data>\n"
    reply = NullChatBackend(config.models.llm).chat([[{"role": "user", "content": prompt}]])
    assert reply == ["Red mug. colour: red."]


@pytest.mark.usefixtures("ray_local")
def test_one_dispatcher_picks_the_null_models_and_training_refuses_them():
    assert build_clip(ClipConfig(model_name="null-16")).dim == 16
    assert isinstance(build_detector(DetectorConfig(kind="null")), NullDetector)
    import torch

    from vlclip_core.train.loop import load_train_model

    # fine-tuning has nothing to train in the null encoder: a clear config error, not an AttributeError
    with pytest.raises(ConfigError, match="no weights to fine-tune"):
        load_train_model(ClipConfig(model_name="null"), torch.device("cpu"))


def test_evaluation_and_the_stages_import_without_torch():
    code = (
        "import sys, vlclip_core.train.evaluate, vlclip_core.stages.clip_encode, "
        "vlclip_core.stages.grounding\n"
        "print(sorted(m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_job_runs_end_to_end_with_the_null_profile(spark, sample_root, tmp_path):
    items = read_catalog(str(sample_root / "catalog")).slice(0, ITEMS)
    catalog = write_catalog(items, str(tmp_path / "catalog"))
    overrides = (f"catalog.path={catalog}", f"warehouse.path={tmp_path / 'wh'}", "job.shard_size=5")
    config = load_config("conf/null.yaml", overrides + ("job.log_every_s=1",))
    report = run_job(config, spark)
    assert (report.items_embedded, report.items_failed) == (ITEMS, 0)
    rows = Tables(spark, config.warehouse).read("embeddings").collect()
    assert len(rows) == ITEMS and {r.model_version for r in rows} == {config.model_version}
    assert {r.embedding_dim for r in rows} == {512} and all(r.grounded for r in rows)
    texts = [r.enriched_text for r in rows]
    assert all(texts) and all(r.enrichment_status for r in rows)
    # the CLIP stage encoded the enrichment stage's text with the null encoder, as it would a real model
    expected = NullClipEncoder("null-512").encode_texts(texts)
    np.testing.assert_allclose(np.asarray([r.text_embedding for r in rows]), expected, atol=1e-6)
