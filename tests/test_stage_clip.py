"""Tests for the CLIP stage: shapes, unit norms, fusion weights, sub-batching and error rows."""

import numpy as np
import pytest
from models_helpers import clip_batch, product_image, tiny_config

from vlclip_core import schema as S
from vlclip_core.stages.clip_encode import ClipStage

TEXTS = ["red running shoe", "leather handbag", "ceramic coffee mug", "blue t-shirt", "black backpack"]


@pytest.fixture(scope="module")
def crops():
    return [
        product_image(40 + 10 * i, 70 - 5 * i, (5, 5, 30, 30), color=(40 * i, 90, 200), seed=i)
        for i in range(5)
    ]


class CountingEncoder:
    """Wraps a ClipEncoder and records the size of each image/text encode call."""

    def __init__(self, inner):
        self.inner, self.dim, self.image_calls, self.text_calls = inner, inner.dim, [], []

    def encode_images(self, images):
        self.image_calls.append(len(images))
        return self.inner.encode_images(images)

    def encode_texts(self, texts):
        self.text_calls.append(len(texts))
        return self.inner.encode_texts(texts)


def test_clip_stage_loads_the_configured_model_and_outputs_unit_embeddings(paths, crops):
    stage = ClipStage(tiny_config(paths))
    out = stage(clip_batch(crops, TEXTS))
    assert stage.dim == 32
    for col in (S.IMAGE_EMBEDDING, S.TEXT_EMBEDDING, S.EMBEDDING):
        assert out[col].shape == (5, 32) and out[col].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out[col], axis=1), 1.0, atol=1e-5)
    assert list(out[S.CROP_RGB]) == [None] * 5
    assert list(out[S.STATUS]) == ["ok"] * 5


def test_image_only_fusion_equals_the_image_embedding(paths, encoder, crops):
    cfg = tiny_config(paths, "models.clip.image_weight=1", "models.clip.text_weight=0")
    out = ClipStage(cfg, encoder=encoder)(clip_batch(crops, TEXTS))
    np.testing.assert_allclose(out[S.EMBEDDING], out[S.IMAGE_EMBEDDING], atol=1e-6)
    assert np.abs(out[S.EMBEDDING] - out[S.TEXT_EMBEDDING]).max() > 1e-2


def test_weighted_fusion_is_the_normalised_weighted_sum(paths, encoder, crops):
    cfg = tiny_config(paths, "models.clip.image_weight=0.7", "models.clip.text_weight=0.3")
    out = ClipStage(cfg, encoder=encoder)(clip_batch(crops, TEXTS))
    mixed = 0.7 * out[S.IMAGE_EMBEDDING] + 0.3 * out[S.TEXT_EMBEDDING]
    expected = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    np.testing.assert_allclose(out[S.EMBEDDING], expected, atol=1e-6)
    np.testing.assert_allclose(out[S.IMAGE_EMBEDDING], encoder.encode_images(crops), atol=1e-5)
    np.testing.assert_allclose(out[S.TEXT_EMBEDDING], encoder.encode_texts(TEXTS), atol=1e-5)


def test_sub_batches_follow_the_configured_batch_size(paths, encoder, crops):
    counting = CountingEncoder(encoder)
    whole = ClipStage(tiny_config(paths), encoder=encoder)(clip_batch(crops, TEXTS))
    small_batches = ClipStage(tiny_config(paths, "stages.clip.batch_size=2"), encoder=counting)
    split = small_batches(clip_batch(crops, TEXTS))
    assert counting.image_calls == [2, 2, 1] and counting.text_calls == [2, 2, 1]
    np.testing.assert_allclose(split[S.EMBEDDING], whole[S.EMBEDDING], atol=1e-5)


def test_error_rows_stay_nan_and_keep_their_crop(paths, encoder, crops):
    batch = clip_batch(crops[:3], TEXTS[:3])
    batch[S.STATUS] = np.array(["ok", "error", "ok"], dtype=object)
    batch[S.ERROR_STAGE] = np.array([None, "grounding", None], dtype=object)
    batch[S.ERROR_TYPE] = np.array([None, "bad_image", None], dtype=object)
    batch[S.ERROR_MESSAGE] = np.array([None, "broken", None], dtype=object)
    out = ClipStage(tiny_config(paths), encoder=encoder)(batch)
    for col in (S.IMAGE_EMBEDDING, S.TEXT_EMBEDDING, S.EMBEDDING):
        assert np.isnan(out[col][1]).all() and np.isfinite(out[col][[0, 2]]).all()
    assert out[S.CROP_RGB][1] == crops[1].tobytes() and out[S.CROP_RGB][0] is None
    assert (out[S.STATUS][1], out[S.ERROR_STAGE][1]) == ("error", "grounding")


def test_missing_text_becomes_an_error_row(paths, encoder, crops):
    out = ClipStage(tiny_config(paths), encoder=encoder)(clip_batch(crops[:3], ["mug", None, "lamp"]))
    assert list(out[S.STATUS]) == ["ok", "error", "ok"]
    assert (out[S.ERROR_STAGE][1], out[S.ERROR_TYPE][1]) == ("clip", "missing_text")
    assert np.isnan(out[S.EMBEDDING][1]).all() and np.isfinite(out[S.EMBEDDING][[0, 2]]).all()
