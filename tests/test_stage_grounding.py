"""Tests for the grounding stage: prompt rule, box choice, crop, cache, prompt grouping, tiny detector."""

import math

import numpy as np
import pytest
from models_helpers import grounding_batch, product_image, tiny_config

from vlclip_core import schema as S
from vlclip_core.config import ConfigError
from vlclip_core.errors import ItemError
from vlclip_core.models.detector import Candidate, load_detector
from vlclip_core.stages.grounding import GroundingStage, build_prompt, choose_box, crop_image


@pytest.fixture(scope="module")
def real_detector(paths):
    return load_detector(tiny_config(paths).models.detector, "cpu")


class CountingDetector:
    """Wraps a detector and records (prompt, number of images) per call."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def detect(self, images, prompt):
        self.calls.append((prompt, len(images)))
        return self.inner.detect(images, prompt)


class FakeDetector:
    """Box-logic tests only: returns the given candidates for each image, in call order."""

    def __init__(self, per_image):
        self.per_image = list(per_image)
        self.calls = []

    def detect(self, images, prompt):
        self.calls.append((prompt, len(images)))
        found, self.per_image = self.per_image[: len(images)], self.per_image[len(images) :]
        return found


# --- prompt rule ---------------------------------------------------------------------------------


def test_prompt_uses_lower_cased_product_type():
    assert build_prompt("Running Shoe ", "Whatever title") == "running shoe."
    assert build_prompt("T-Shirt", None, "a photo of a {product_type}.") == "a photo of a t-shirt."


@pytest.mark.parametrize("product_type", [None, "", "   "])
def test_prompt_falls_back_to_first_six_title_words(product_type):
    title = "Nike Men's Air-Zoom, Pegasus 40 Red Size 10"
    assert build_prompt(product_type, title) == "nike mens air zoom pegasus 40."


def test_prompt_without_product_type_or_title_is_an_item_error():
    with pytest.raises(ItemError) as err:
        build_prompt(None, "  ,. ")
    assert err.value.error_type == "no_prompt"


def test_bad_prompt_template_is_a_config_error(paths):
    with pytest.raises(ConfigError, match="category"):
        cfg = tiny_config(paths, "models.detector.prompt_template='{category}.'")
        GroundingStage(cfg, detector=FakeDetector([]))


# --- box choice and crop ---------------------------------------------------------------------------


def test_highest_score_wins():
    chosen = choose_box([Candidate((0.1, 0.1, 0.5, 0.5), 0.4), Candidate((0.2, 0.2, 0.6, 0.9), 0.7)], 0.02)
    assert (chosen.box, chosen.score) == ((0.2, 0.2, 0.6, 0.9), 0.7)
    assert (chosen.grounded, chosen.reason) == (True, None)


def test_score_tie_goes_to_larger_box_then_earlier_candidate():
    small, large = (0.0, 0.0, 0.3, 0.3), (0.0, 0.0, 0.6, 0.6)
    assert choose_box([Candidate(small, 0.5), Candidate(large, 0.5)], 0.02).box == large
    same_area = [Candidate((0.0, 0.0, 0.4, 0.5), 0.5), Candidate((0.5, 0.5, 1.0, 0.9), 0.5)]
    assert choose_box(same_area, 0.02).box == (0.0, 0.0, 0.4, 0.5)


def test_boxes_below_min_size_are_rejected_before_choosing():
    tiny_high = Candidate((0.0, 0.0, 0.1, 0.1), 0.99)  # 1% of the image
    big_low = Candidate((0.2, 0.2, 0.8, 0.8), 0.30)
    assert choose_box([tiny_high, big_low], 0.02).box == (0.2, 0.2, 0.8, 0.8)
    only_small = choose_box([tiny_high], 0.02)
    assert (only_small.grounded, only_small.reason, only_small.box) == (False, "box_too_small", (0, 0, 1, 1))
    assert math.isnan(only_small.score)
    nothing = choose_box([], 0.02)
    assert (nothing.grounded, nothing.reason) == (False, "no_box_above_threshold")


def test_crop_adds_margin_and_clips_to_the_image():
    image = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)
    crop = crop_image(image, (0.25, 0.5, 0.75, 1.0), margin=0.1)  # 100x50 px box -> +10 / +5 px per side
    assert crop.shape == (55, 120, 3)
    np.testing.assert_array_equal(crop, image[45:100, 40:160])
    assert crop_image(image, (0.0, 0.0, 1.0, 1.0), margin=0.05).shape == (100, 200, 3)


# --- the stage with a fake detector (box logic only) -----------------------------------------------


def test_stage_writes_box_score_crop_and_frees_the_image(paths):
    images = [product_image(100, 200, (50, 50, 150, 100), seed=i) for i in range(3)]
    fake = FakeDetector(
        [[Candidate((0.25, 0.5, 0.75, 1.0), 0.8)], [Candidate((0.0, 0.0, 0.1, 0.1), 0.9)], []]
    )
    stage = GroundingStage(tiny_config(paths, "models.detector.margin=0.1"), detector=fake)
    out = stage(grounding_batch(images, ["Handbag"] * 3))
    assert fake.calls == [("handbag.", 3)]
    np.testing.assert_allclose(out[S.GROUNDING_BOX], [[0.25, 0.5, 0.75, 1.0], [0, 0, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_allclose(out[S.GROUNDING_SCORE], [0.8, np.nan, np.nan])
    assert list(out[S.GROUNDED]) == [True, False, False]
    assert list(out[S.GROUNDING_REASON]) == [None, "box_too_small", "no_box_above_threshold"]
    assert list(out[S.GROUNDING_SOURCE]) == ["model"] * 3
    assert list(out[S.GROUNDING_PROMPT]) == ["handbag."] * 3
    np.testing.assert_array_equal(out[S.CROP_HW], [[55, 120], [100, 200], [100, 200]])
    assert out[S.CROP_RGB][0] == images[0][45:100, 40:160].tobytes()
    assert out[S.CROP_RGB][2] == images[2].tobytes()
    assert list(out[S.IMAGE_RGB]) == [None, None, None]
    assert out[S.GROUNDING_BOX].dtype == np.float32 and out[S.CROP_HW].dtype == np.int32


def test_error_row_passes_through_untouched(paths):
    images = [product_image(60, 80, (10, 10, 50, 50), seed=i) for i in range(2)]
    fake = FakeDetector([[Candidate((0.1, 0.1, 0.9, 0.9), 0.6)]])
    batch = grounding_batch(images, ["mug", "mug"])
    batch[S.STATUS] = np.array(["error", "ok"], dtype=object)
    batch[S.ERROR_STAGE] = np.array(["decode", None], dtype=object)
    batch[S.ERROR_TYPE] = np.array(["http_404", None], dtype=object)
    batch[S.ERROR_MESSAGE] = np.array(["not found", None], dtype=object)
    out = GroundingStage(tiny_config(paths), detector=fake)(batch)
    assert fake.calls == [("mug.", 1)]
    assert (out[S.STATUS][0], out[S.ERROR_TYPE][0]) == ("error", "http_404")
    assert np.isnan(out[S.GROUNDING_BOX][0]).all() and np.isnan(out[S.GROUNDING_SCORE][0])
    assert out[S.GROUNDED][0] is None and out[S.CROP_RGB][0] is None and out[S.GROUNDING_SOURCE][0] is None
    assert out[S.IMAGE_RGB][0] == images[0].tobytes()
    assert out[S.GROUNDED][1] is True and out[S.STATUS][1] == "ok"


def test_bad_rows_become_error_rows_and_the_good_ones_stay_batched(paths):
    images = [product_image(60, 80, (10, 10, 50, 50), seed=i) for i in range(4)]
    batch = grounding_batch(images, ["mug", None, "mug", "mug"], ["a", " ", "b", "c"])
    batch[S.IMAGE_RGB][0] = b"\x00" * 10
    box = Candidate((0.1, 0.1, 0.9, 0.9), 0.6)
    fake = FakeDetector([[box], [box]])
    out = GroundingStage(tiny_config(paths), detector=fake)(batch)
    assert fake.calls == [("mug.", 2)]  # one call for both good rows, not one per row
    assert list(out[S.STATUS]) == ["error", "error", "ok", "ok"]
    assert list(out[S.ERROR_TYPE][:2]) == ["bad_image", "no_prompt"]
    assert list(out[S.ERROR_STAGE][:2]) == ["grounding", "grounding"]
    assert list(out[S.GROUNDED]) == [None, None, True, True] and out[S.CROP_RGB][0] is None


# --- cache and prompt grouping with the real tiny detector -----------------------------------------


def _with_cache(batch, rows, prompt, box, score, grounded, reason=None):
    for r in rows:
        batch[S.CACHED_IMAGE_SHA][r] = batch[S.IMAGE_SHA][r]
        batch[S.CACHED_PROMPT][r] = prompt
        batch[S.CACHED_BOX][r] = box
        batch[S.CACHED_SCORE][r] = score
        batch[S.CACHED_GROUNDED][r] = grounded
        batch[S.CACHED_GROUNDING_REASON][r] = reason
    return batch


def test_cache_hit_makes_no_detector_call(paths, real_detector):
    images = [product_image(80, 100, (10, 10, 90, 70), seed=i) for i in range(3)]
    batch = grounding_batch(images, ["backpack"] * 3)
    _with_cache(batch, [0, 1], "backpack.", [0.1, 0.2, 0.6, 0.8], 0.77, True)
    _with_cache(batch, [2], "backpack.", [np.nan] * 4, np.nan, False, "box_too_small")
    counting = CountingDetector(real_detector)
    out = GroundingStage(tiny_config(paths, "models.detector.margin=0"), detector=counting)(batch)
    assert counting.calls == []
    assert list(out[S.GROUNDING_SOURCE]) == ["cache"] * 3
    np.testing.assert_allclose(out[S.GROUNDING_BOX][0], [0.1, 0.2, 0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(out[S.GROUNDING_SCORE], [0.77, 0.77, np.nan], rtol=1e-6)
    assert list(out[S.GROUNDED]) == [True, True, False]
    assert list(out[S.GROUNDING_REASON]) == [None, None, "box_too_small"]
    assert out[S.CROP_RGB][0] == images[0][16:64, 10:60].tobytes()


def test_stale_cache_entries_go_to_the_detector(paths, real_detector):
    images = [product_image(80, 100, (10, 10, 90, 70), seed=i) for i in range(3)]
    batch = grounding_batch(images, ["backpack"] * 3)
    _with_cache(batch, [0, 1, 2], "backpack.", [0.1, 0.2, 0.6, 0.8], 0.77, True)
    batch[S.CACHED_IMAGE_SHA][1] = "another-image"  # image changed
    batch[S.CACHED_PROMPT][2] = "bag."  # prompt changed
    counting = CountingDetector(real_detector)
    out = GroundingStage(tiny_config(paths), detector=counting)(batch)
    assert counting.calls == [("backpack.", 2)]
    assert list(out[S.GROUNDING_SOURCE]) == ["cache", "model", "model"]


def test_mixed_product_types_make_one_call_per_prompt(paths, real_detector):
    images = [product_image(90, 120, (20, 20, 100, 80), seed=i) for i in range(5)]
    types = ["Running Shoe", "sunglasses", "running shoe", "Sunglasses", "running shoe"]
    counting = CountingDetector(real_detector)
    stage = GroundingStage(tiny_config(paths), detector=counting)
    out = stage(grounding_batch(images, types))
    assert sorted(counting.calls) == [("running shoe.", 3), ("sunglasses.", 2)]
    assert stage.detector_calls == 2
    assert list(out[S.GROUNDING_PROMPT]) == [
        "running shoe.",
        "sunglasses.",
        "running shoe.",
        "sunglasses.",
        "running shoe.",
    ]


def test_prompt_groups_are_split_into_sub_batches(paths, real_detector):
    images = [product_image(90, 120, (20, 20, 100, 80), seed=i) for i in range(5)]
    counting = CountingDetector(real_detector)
    GroundingStage(tiny_config(paths, "stages.grounding.batch_size=2"), detector=counting)(
        grounding_batch(images, ["wristwatch"] * 5)
    )
    assert counting.calls == [("wristwatch.", 2), ("wristwatch.", 2), ("wristwatch.", 1)]


def test_real_tiny_detector_end_to_end(paths):
    images = [
        product_image(120, 160, (20, 30, 100, 90), seed=1),
        product_image(200, 90, (5, 5, 80, 150), seed=2),
        product_image(64, 64, (8, 8, 56, 56), seed=3),
    ]
    stage = GroundingStage(tiny_config(paths, "models.detector.min_box_frac=0.01"))
    titles = ["x", "Blue Ceramic Mug 12oz", "y"]
    out = stage(grounding_batch(images, ["table lamp", None, "coffee mug"], titles))
    assert list(out[S.STATUS]) == ["ok"] * 3
    assert out[S.GROUNDING_BOX].shape == (3, 4) and out[S.CROP_HW].shape == (3, 2)
    assert list(out[S.GROUNDING_PROMPT]) == ["table lamp.", "blue ceramic mug 12oz.", "coffee mug."]
    assert stage.detector_calls == 3
    for r in range(3):
        box, (h, w) = out[S.GROUNDING_BOX][r], out[S.CROP_HW][r]
        assert len(out[S.CROP_RGB][r]) == h * w * 3
        assert 0 < h <= images[r].shape[0] and 0 < w <= images[r].shape[1]
        assert 0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0
        if out[S.GROUNDED][r]:
            assert out[S.GROUNDING_SCORE][r] > 0.25 and out[S.GROUNDING_REASON][r] is None
        else:
            assert out[S.GROUNDING_REASON][r] in ("no_box_above_threshold", "box_too_small")
            np.testing.assert_array_equal(box, [0, 0, 1, 1])
    assert out["sec_grounding"].shape == (3,)
