"""Tests for the model loaders, device/dtype choice and the tiny offline model builders."""

import json
import os

import numpy as np
import open_clip
import pytest
import torch
from models_helpers import product_image, tiny_config
from PIL import Image
from safetensors.torch import load_file

from vlclip_core.config import ClipConfig, ConfigError, DetectorConfig
from vlclip_core.models.clip import ImagePreprocess, load_clip
from vlclip_core.models.detector import load_detector
from vlclip_core.models.device import pick_device, torch_dtype
from vlclip_core.models.tiny import build_tiny_clip, build_tiny_detector, build_tiny_models, build_tiny_owlv2
from vlclip_core.tools.sample_catalog import PRODUCT_TYPES, PRODUCTS


@pytest.fixture(scope="module")
def detector(paths):
    return load_detector(tiny_config(paths).models.detector, "cpu")


def _state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_clip_same_seed_same_weights_other_seed_differs(tmp_path):
    first = build_tiny_clip(str(tmp_path / "a"), seed=3)
    second = build_tiny_clip(str(tmp_path / "b"), seed=3)
    other = build_tiny_clip(str(tmp_path / "c"), seed=4)
    load = lambda p: torch.load(p["checkpoint"], weights_only=True)  # noqa: E731
    assert _state_dicts_equal(load(first), load(second))
    assert not _state_dicts_equal(load(first), load(other))


def test_tiny_detector_same_seed_same_weights_other_seed_differs(tmp_path):
    load = lambda d: load_file(os.path.join(d, "model.safetensors"))  # noqa: E731
    first = load(build_tiny_detector(str(tmp_path / "a"), seed=3))
    assert _state_dicts_equal(first, load(build_tiny_detector(str(tmp_path / "b"), seed=3)))
    assert not _state_dicts_equal(first, load(build_tiny_detector(str(tmp_path / "c"), seed=4)))


def test_clip_loader_loads_the_checkpoint_weights(paths, encoder):
    saved = torch.load(paths["clip_checkpoint"], weights_only=True)
    assert _state_dicts_equal(saved, encoder.model.state_dict())
    assert encoder.dim == 32
    assert encoder.preprocess.size == (64, 64)


def test_image_embeddings_unit_norm_distinct_and_batch_independent(encoder):
    shoe = product_image(120, 160, (20, 30, 100, 90), color=(200, 30, 30), seed=1)
    lamp = product_image(90, 60, (10, 10, 50, 80), color=(20, 40, 220), seed=2)
    together = encoder.encode_images([shoe, lamp])
    alone = encoder.encode_images([lamp])
    assert together.shape == (2, 32) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.abs(together[0] - together[1]).max() > 1e-3
    np.testing.assert_allclose(together[1], alone[0], atol=1e-5)


def test_text_longer_than_context_length_is_truncated_and_encoded(encoder):
    long_text = " ".join(f"word{i}" for i in range(400))
    assert encoder.tokenizer([long_text]).shape == (1, 77)
    embeddings = encoder.encode_texts(["red running shoe", long_text])
    assert embeddings.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert np.abs(embeddings[0] - embeddings[1]).max() > 1e-3


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
def test_batched_preprocess_matches_open_clip_pil_transform(encoder, mode):
    image = product_image(75, 130, (10, 10, 90, 60), seed=3)
    ours = ImagePreprocess(
        size=(64, 64), mean=encoder.preprocess.mean, std=encoder.preprocess.std, resize_mode=mode
    )([image])[0]
    reference = open_clip.image_transform(
        64, False, mean=encoder.preprocess.mean, std=encoder.preprocess.std, resize_mode=mode
    )(Image.fromarray(image))
    assert ours.shape == reference.shape == (3, 64, 64)
    assert (ours - reference).abs().max().item() < 0.02  # one uint8 level / std ~ 0.015


def test_unknown_clip_model_name_is_a_config_error():
    with pytest.raises(ConfigError, match="no-such-arch"):
        load_clip(ClipConfig(model_name="no-such-arch"), "cpu")


def test_missing_clip_checkpoint_fails_with_the_path(paths):
    cfg = ClipConfig(
        model_name=paths["clip_model_name"],
        config_dir=paths["clip_config_dir"],
        pretrained="/nonexistent/ckpt.pt",
    )
    with pytest.raises(RuntimeError, match="/nonexistent/ckpt.pt"):
        load_clip(cfg, "cpu")


def test_detector_returns_normalised_candidates_above_threshold(detector):
    images = [
        product_image(120, 160, (20, 30, 100, 90), seed=1),
        product_image(200, 90, (5, 5, 80, 150), seed=2),
    ]
    found = detector.detect(images, "running shoe.")
    assert len(found) == 2 and all(found)
    for candidates in found:
        for box, score in candidates:
            assert score > detector.box_threshold
            assert 0.0 <= box[0] <= box[2] <= 1.0 and 0.0 <= box[1] <= box[3] <= 1.0


def test_detector_threshold_filters_and_long_prompt_does_not_crash(paths, detector):
    image = product_image(100, 100, (10, 10, 90, 90), seed=4)
    strict = load_detector(DetectorConfig(path=paths["detector"], box_threshold=0.9999), "cpu")
    loose_count = len(detector.detect([image], "handbag.")[0])
    strict_found = strict.detect([image], "handbag.")[0]
    assert all(score > 0.9999 for _, score in strict_found)
    assert len(strict_found) < loose_count
    long_prompt = " ".join(["zebra"] * 200) + "."
    assert len(detector.detect([image, image], long_prompt)) == 2


def test_detector_vocabulary_covers_the_catalog_product_types(detector):
    tokenizer = detector.processor.tokenizer
    for product_type in PRODUCT_TYPES:
        pieces = tokenizer.tokenize(product_type)
        assert "[UNK]" not in pieces and not any(p.startswith("##") for p in pieces), (product_type, pieces)
    assert tokenizer.tokenize("t-shirt") == ["t", "-", "shirt"]
    for spec in PRODUCTS.values():
        for noun in spec.nouns:
            assert not any(p.startswith("##") or p == "[UNK]" for p in tokenizer.tokenize(noun)), noun


def test_missing_detector_directory_fails_with_the_path(tmp_path):
    with pytest.raises(RuntimeError, match="nothing-here"):
        load_detector(DetectorConfig(path=str(tmp_path / "nothing-here")), "cpu")


def test_pick_device_and_dtype_rules():
    assert pick_device("cpu", "cuda").type == "cpu"
    assert pick_device("auto", "auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch_dtype("fp16", torch.device("cpu")) == torch.float32
    assert torch_dtype("bfloat16", torch.device("cuda")) == torch.bfloat16
    assert torch_dtype("fp16", torch.device("cuda")) == torch.float16
    with pytest.raises(ConfigError, match="float8"):
        torch_dtype("float8", torch.device("cpu"))
    with pytest.raises(ConfigError, match="tpu"):
        pick_device("tpu")


def test_build_tiny_models_is_idempotent_per_seed(tmp_path):
    pytest.importorskip("vlclip_core.llm.tiny")
    out = str(tmp_path)
    paths = build_tiny_models(out, seed=0)
    ready = os.path.join(out, "READY")
    stamp = os.stat(paths["clip_checkpoint"]).st_mtime_ns, os.stat(ready).st_mtime_ns
    assert build_tiny_models(out, seed=0) == paths
    assert (os.stat(paths["clip_checkpoint"]).st_mtime_ns, os.stat(ready).st_mtime_ns) == stamp
    with open(ready, encoding="utf-8") as fh:
        assert json.load(fh)["seed"] == 0
    cfg = tiny_config(paths)
    assert cfg.models.clip.pretrained == paths["clip_checkpoint"]
    assert cfg.models.detector.path == paths["detector"]
    assert cfg.models.llm.path == paths["llm"] and os.path.isdir(paths["llm"])


def test_owlv2_detector_loads_and_detects_through_the_same_code(tmp_path):
    owl_dir = build_tiny_owlv2(str(tmp_path), seed=0)
    detector = load_detector(DetectorConfig(kind="owlv2", path=owl_dir, box_threshold=0.0), "cpu")
    images = [product_image(80, 120, (10, 10, 70, 60), seed=5), product_image(90, 40, (5, 5, 35, 80), seed=6)]
    found = detector.detect(images, "running shoe. " + "very long words " * 20)
    assert [len(c) for c in found] == [16, 16]  # (64 / 16) ** 2 patch queries, all above threshold 0
    for candidates in found:
        assert all(0.0 <= b[0] <= b[2] <= 1.0 and 0.0 <= b[1] <= b[3] <= 1.0 for b, _ in candidates)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_half_precision_on_gpu_matches_fp32(paths):
    images = [
        product_image(120, 160, (20, 30, 100, 90), seed=1),
        product_image(64, 64, (8, 8, 56, 56), seed=3),
    ]
    fp32 = load_clip(tiny_config(paths).models.clip, "cuda")
    fp16 = load_clip(tiny_config(paths, "models.clip.precision=fp16").models.clip, "cuda")
    np.testing.assert_allclose(fp16.encode_images(images), fp32.encode_images(images), atol=2e-2)
    np.testing.assert_allclose(fp16.encode_texts(["red shoe"]), fp32.encode_texts(["red shoe"]), atol=2e-2)
    detector = load_detector(tiny_config(paths, "models.detector.dtype=float16").models.detector, "cuda")
    assert detector.model.dtype == torch.float16
    found = detector.detect(images, "running shoe.")
    assert len(found) == 2 and all(0.0 <= b[0] <= b[2] <= 1.0 for c in found for b, _ in c)
