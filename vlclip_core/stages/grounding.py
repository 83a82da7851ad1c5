"""Grounding stage: find the product's box with the open-vocabulary detector (or the cache) and crop it."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from vlclip_core import schema as S
from vlclip_core.batch import Batch, is_null, mark_error, object_column
from vlclip_core.config import DetectorConfig, VlclipConfig, check_prompt_template
from vlclip_core.errors import ItemError
from vlclip_core.models.candidate import Candidate
from vlclip_core.models.select import build_detector
from vlclip_core.stages.base import BatchStage

log = logging.getLogger(__name__)

TITLE_PROMPT_WORDS = 6
NO_BOX = "no_box_above_threshold"
BOX_TOO_SMALL = "box_too_small"
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)
_PIXEL_EPS = 1e-3


def build_prompt(product_type: Optional[str], title: Optional[str], template: str = "{product_type}.") -> str:
    """The detector's text prompt for one item.

    Rule: `template` filled with the lower-cased, stripped `product_type`
    ("Running Shoe" -> "running shoe."). When `product_type` is null or blank, the template is filled
    with the first 6 words of the title instead, lower-cased, apostrophes removed and other punctuation
    replaced by spaces ("Nike Men's Air-Zoom, size 10 red" -> "nike mens air zoom size 10.").
    Raises ItemError("no_prompt") when both are blank.
    """
    subject = (product_type or "").strip().lower()
    if not subject:
        words = re.sub(r"[^\w\s]", " ", (title or "").lower().replace("'", "").replace("\u2019", "")).split()
        subject = " ".join(words[:TITLE_PROMPT_WORDS])
    if not subject:
        raise ItemError("no_prompt", "item has neither a product_type nor a title for the detector prompt")
    return template.format(product_type=subject)


@dataclass
class Grounding:
    """The grounding outcome of one row: `box` is the detector's box (before the crop margin)."""

    box: tuple
    score: float
    grounded: bool
    reason: Optional[str]
    source: str


def choose_box(candidates: Sequence[Candidate], min_box_frac: float) -> Grounding:
    """The best acceptable candidate, or the whole image with the reason why none was acceptable.

    Candidates are already above the detector's thresholds. Boxes whose normalised area is below
    `min_box_frac` are dropped; among the rest the highest score wins, ties go to the larger box, then
    to the earlier candidate. No candidate at all -> "no_box_above_threshold"; candidates but all too
    small -> "box_too_small".
    """
    if not candidates:
        return Grounding(WHOLE_IMAGE, math.nan, False, NO_BOX, S.SOURCE_MODEL)
    areas = [box_area(c.box) for c in candidates]
    acceptable = [i for i, area in enumerate(areas) if area > 0 and area >= min_box_frac]
    if not acceptable:
        return Grounding(WHOLE_IMAGE, math.nan, False, BOX_TOO_SMALL, S.SOURCE_MODEL)
    best = min(acceptable, key=lambda i: (-candidates[i].score, -areas[i], i))
    return Grounding(
        tuple(float(v) for v in candidates[best].box),
        float(candidates[best].score),
        True,
        None,
        S.SOURCE_MODEL,
    )


def box_area(box: Sequence[float]) -> float:
    """Area of a normalised (x0, y0, x1, y1) box as a fraction of the image (0 when degenerate)."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def crop_image(image: np.ndarray, box: Sequence[float], margin: float) -> np.ndarray:
    """The pixels of normalised `box` widened by `margin` x its side on each side, clipped to the image."""
    h, w = image.shape[:2]
    x0, x1 = _span(box[0], box[2], w, margin)
    y0, y1 = _span(box[1], box[3], h, margin)
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def _span(lo: float, hi: float, size: int, margin: float) -> tuple:
    pad = margin * (hi - lo) * size
    # _PIXEL_EPS absorbs float32 round-off (0.6 is stored as 0.60000002), so a box maps to the same pixels
    start = min(max(int(math.floor(lo * size - pad + _PIXEL_EPS)), 0), size - 1)
    stop = max(min(int(math.ceil(hi * size + pad - _PIXEL_EPS)), size), start + 1)
    return start, stop


def image_from_row(
    batch: Batch, row: int, rgb_col: str = S.IMAGE_RGB, hw_col: str = S.IMAGE_HW
) -> np.ndarray:
    """The (h, w, 3) uint8 array that a row carries as raw bytes plus its (h, w)."""
    data = batch[rgb_col][row]
    if data is None:
        raise ItemError("missing_image", f"row has no {rgb_col}")
    h, w = (int(v) for v in batch[hw_col][row])
    if h <= 0 or w <= 0 or len(data) != h * w * 3:
        raise ItemError("bad_image", f"{rgb_col} holds {len(data)} bytes, not {h}x{w}x3")
    return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)


class GroundingStage(BatchStage):
    """Detects the product named by each item's prompt and crops it (see `build_prompt`, `choose_box`).

    A row whose image sha and prompt equal the cached ones reuses the cached result without a detector
    call (source "cache"); the other rows are grouped by prompt, one detector call per prompt and
    sub-batch of `stages.grounding.batch_size` (source "model"). Rows that are not grounded keep the
    whole image, box [0, 0, 1, 1] and score NaN. Each processed row's IMAGE_RGB is set to None.
    """

    name = "grounding"
    inputs = (
        S.ITEM_ID,
        S.PRODUCT_TYPE,
        S.TITLE,
        S.IMAGE_RGB,
        S.IMAGE_HW,
        S.IMAGE_SHA,
        S.CACHED_IMAGE_SHA,
        S.CACHED_PROMPT,
        S.CACHED_BOX,
        S.CACHED_SCORE,
        S.CACHED_GROUNDED,
        S.CACHED_GROUNDING_REASON,
    )

    def __init__(self, config: VlclipConfig, detector=None):
        self.cfg: DetectorConfig = config.models.detector
        check_prompt_template(self.cfg.prompt_template)
        self.batch_size = config.stages.grounding.batch_size
        self.detector = detector if detector is not None else build_detector(self.cfg, config.models.device)
        self.detector_calls = 0

    def new_outputs(self, n: int) -> Batch:
        return {
            S.GROUNDING_BOX: np.full((n, 4), np.nan, dtype=np.float32),
            S.GROUNDING_SCORE: np.full(n, np.nan, dtype=np.float32),
            **{
                col: object_column(n)
                for col in (
                    S.GROUNDED,
                    S.GROUNDING_REASON,
                    S.GROUNDING_SOURCE,
                    S.GROUNDING_PROMPT,
                    S.CROP_RGB,
                )
            },
            S.CROP_HW: np.zeros((n, 2), dtype=np.int32),
        }

    def process(self, batch: Batch, idx: np.ndarray, out: Batch) -> None:
        inputs = prepare_rows(
            batch, idx, self.name, lambda r: (image_from_row(batch, r), self._prompt(batch, r))
        )
        rows = list(inputs)
        images = {r: inputs[r][0] for r in rows}
        prompts = {r: inputs[r][1] for r in rows}
        results = {r: cached_grounding(batch, r, prompts[r]) for r in rows}
        misses = [r for r in rows if results[r] is None]
        results.update(self._detect(misses, images, prompts))
        for r in rows:
            crop = crop_image(images[r], results[r].box, self.cfg.margin)
            self._write(out, r, results[r], prompts[r], crop)
        clear_rows(batch, S.IMAGE_RGB, rows)

    def _prompt(self, batch: Batch, row: int) -> str:
        return build_prompt(batch[S.PRODUCT_TYPE][row], batch[S.TITLE][row], self.cfg.prompt_template)

    def _detect(self, rows: List[int], images: Dict[int, np.ndarray], prompts: Dict[int, str]) -> dict:
        results = {}
        for prompt, group in _group_by_prompt(rows, prompts).items():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                self.detector_calls += 1
                found = self.detector.detect([images[r] for r in chunk], prompt)
                results.update({r: choose_box(c, self.cfg.min_box_frac) for r, c in zip(chunk, found)})
        return results

    @staticmethod
    def _write(out: Batch, row: int, result: Grounding, prompt: str, crop: np.ndarray) -> None:
        out[S.GROUNDING_BOX][row] = result.box
        out[S.GROUNDING_SCORE][row] = result.score if result.grounded else np.nan
        out[S.GROUNDED][row] = bool(result.grounded)
        out[S.GROUNDING_REASON][row] = None if result.grounded else result.reason
        out[S.GROUNDING_SOURCE][row] = result.source
        out[S.GROUNDING_PROMPT][row] = prompt
        out[S.CROP_RGB][row] = crop.tobytes()
        out[S.CROP_HW][row] = crop.shape[:2]


def prepare_rows(batch: Batch, idx: np.ndarray, stage: str, prepare: Callable[[int], Any]) -> Dict[int, Any]:
    """{row: prepare(row)} for the rows of `idx`; a row whose prepare raises ItemError becomes an error row.

    Marking bad inputs here, instead of raising, keeps the batch together: the base class would
    otherwise retry every row on its own, one model call each.
    """
    ready = {}
    for row in (int(r) for r in idx):
        try:
            ready[row] = prepare(row)
        except ItemError as err:
            mark_error(batch, row, stage, err.error_type, err.message)
    return ready


def cached_grounding(batch: Batch, row: int, prompt: str) -> Optional[Grounding]:
    """The cached result when this row's image sha and prompt match the cache entry, else None.

    A cache entry that claims a box but holds no valid one counts as a miss.
    """
    sha = batch[S.IMAGE_SHA][row]
    if sha is None or batch[S.CACHED_IMAGE_SHA][row] != sha or batch[S.CACHED_PROMPT][row] != prompt:
        return None
    grounded = batch[S.CACHED_GROUNDED][row]
    if is_null(grounded):
        return None
    if not grounded:
        return Grounding(
            WHOLE_IMAGE, math.nan, False, batch[S.CACHED_GROUNDING_REASON][row] or NO_BOX, S.SOURCE_CACHE
        )
    box = _cached_box(batch[S.CACHED_BOX][row])
    if box is None:
        return None
    return Grounding(box, float(batch[S.CACHED_SCORE][row]), True, None, S.SOURCE_CACHE)


def _cached_box(value) -> Optional[tuple]:
    if value is None:
        return None
    box = np.asarray(value, dtype=np.float64).reshape(-1)
    if box.size != 4 or not np.all(np.isfinite(box)) or box_area(box) <= 0:
        return None
    return tuple(float(v) for v in np.clip(box, 0.0, 1.0))


def _group_by_prompt(rows: List[int], prompts: Dict[int, str]) -> Dict[str, List[int]]:
    groups: Dict[str, List[int]] = {}
    for r in rows:
        groups.setdefault(prompts[r], []).append(r)
    return groups


def clear_rows(batch: Batch, column: str, rows: List[int]) -> None:
    """Set batch[column][rows] to None (copying a read-only column first) to free object-store memory."""
    if not batch[column].flags.writeable:
        batch[column] = batch[column].copy()
    batch[column][rows] = None
