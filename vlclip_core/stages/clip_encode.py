"""CLIP stage: embed each grounded crop and enriched text with open_clip and fuse them into one embedding."""

from __future__ import annotations

import logging
from typing import List

import numpy as np

from vlclip_core import schema as S
from vlclip_core.batch import Batch
from vlclip_core.config import VlclipConfig
from vlclip_core.errors import ItemError
from vlclip_core.models.select import build_clip
from vlclip_core.stages.base import BatchStage
from vlclip_core.stages.grounding import clear_rows, image_from_row, prepare_rows

log = logging.getLogger(__name__)


def fuse(image: np.ndarray, text: np.ndarray, image_weight: float, text_weight: float) -> np.ndarray:
    """Row-wise L2-normalise(image_weight * image + text_weight * text) as float32."""
    mixed = image_weight * image.astype(np.float32) + text_weight * text.astype(np.float32)
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    return (mixed / np.maximum(norms, 1e-12)).astype(np.float32)


class ClipStage(BatchStage):
    """Encodes CROP_RGB and ENRICHED_TEXT in sub-batches of `stages.clip.batch_size`.

    Outputs IMAGE_EMBEDDING, TEXT_EMBEDDING and the fused EMBEDDING, (n, dim) float32 with NaN rows for
    rows not processed; `dim` is the model's embedding size. Each processed row's CROP_RGB is set to None.
    """

    name = "clip"
    inputs = (S.ITEM_ID, S.CROP_RGB, S.CROP_HW, S.ENRICHED_TEXT)

    def __init__(self, config: VlclipConfig, encoder=None):
        clip_cfg = config.models.clip
        self.encoder = encoder if encoder is not None else build_clip(clip_cfg, config.models.device)
        self.dim: int = int(self.encoder.dim)
        self.batch_size = config.stages.clip.batch_size
        self.image_weight = clip_cfg.image_weight
        self.text_weight = clip_cfg.text_weight

    def new_outputs(self, n: int) -> Batch:
        return {
            col: np.full((n, self.dim), np.nan, dtype=np.float32)
            for col in (S.IMAGE_EMBEDDING, S.TEXT_EMBEDDING, S.EMBEDDING)
        }

    def process(self, batch: Batch, idx: np.ndarray, out: Batch) -> None:
        inputs = prepare_rows(
            batch,
            idx,
            self.name,
            lambda r: (image_from_row(batch, r, S.CROP_RGB, S.CROP_HW), _text(batch, r)),
        )
        rows = list(inputs)
        if not rows:
            return
        crops = [inputs[r][0] for r in rows]
        texts = [inputs[r][1] for r in rows]
        image_emb = self._in_chunks(self.encoder.encode_images, crops)
        text_emb = self._in_chunks(self.encoder.encode_texts, texts)
        out[S.IMAGE_EMBEDDING][rows] = image_emb
        out[S.TEXT_EMBEDDING][rows] = text_emb
        out[S.EMBEDDING][rows] = fuse(image_emb, text_emb, self.image_weight, self.text_weight)
        clear_rows(batch, S.CROP_RGB, rows)

    def _in_chunks(self, encode, items: List) -> np.ndarray:
        parts = [encode(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


def _text(batch: Batch, row: int) -> str:
    text = batch[S.ENRICHED_TEXT][row]
    if not isinstance(text, str) or not text.strip():
        raise ItemError("missing_text", "row has no enriched_text to embed")
    return text
