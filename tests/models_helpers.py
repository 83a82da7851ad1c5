"""Test helpers for the model and stage tests: tiny-model configs, product-like images, stage batches."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from vlclip_core import schema as S
from vlclip_core.batch import object_values
from vlclip_core.config import VlclipConfig, load_config
from vlclip_core.models.tiny import tiny_overrides

torch.set_num_threads(1)


def tiny_config(paths: Dict[str, str], *overrides: str) -> VlclipConfig:
    """A validated config pointing at the tiny models (`build_tiny_models` output), plus `overrides`."""
    base = ("catalog.path=x", "models.device=cpu") + tiny_overrides(paths)
    return load_config(None, overrides=base + tuple(overrides))


def product_image(h: int, w: int, box: Sequence[int], color=(200, 30, 30), seed: int = 0) -> np.ndarray:
    """A (h, w, 3) uint8 image: textured background, a filled ellipse inside `box` (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(90, 160, size=(h, w, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    ImageDraw.Draw(image).ellipse(list(box), fill=color)
    return np.asarray(image, dtype=np.uint8).copy()


def grounding_batch(
    images: Sequence[Optional[np.ndarray]],
    product_types: Sequence[Optional[str]],
    titles: Optional[Sequence[str]] = None,
) -> dict:
    """A numpy batch with every column the grounding stage reads; no cache entries."""
    n = len(images)
    titles = titles or [f"title {i}" for i in range(n)]
    hw = np.array([img.shape[:2] if img is not None else (0, 0) for img in images], dtype=np.int32)
    batch = {
        S.ITEM_ID: object_values([f"item-{i}" for i in range(n)]),
        S.PRODUCT_TYPE: object_values(product_types),
        S.TITLE: object_values(titles),
        S.IMAGE_RGB: object_values([img.tobytes() if img is not None else None for img in images]),
        S.IMAGE_HW: hw,
        S.IMAGE_SHA: object_values([f"sha-{i}" for i in range(n)]),
        S.CACHED_BOX: np.full((n, 4), np.nan, dtype=np.float32),
        S.CACHED_SCORE: np.full(n, np.nan, dtype=np.float32),
    }
    for col in (S.CACHED_IMAGE_SHA, S.CACHED_PROMPT, S.CACHED_GROUNDED, S.CACHED_GROUNDING_REASON):
        batch[col] = object_values([None] * n)
    return batch


def clip_batch(crops: Sequence[np.ndarray], texts: Sequence[Optional[str]]) -> dict:
    """A numpy batch with the columns the CLIP stage reads."""
    return {
        S.ITEM_ID: object_values([f"item-{i}" for i in range(len(crops))]),
        S.CROP_RGB: object_values([c.tobytes() for c in crops]),
        S.CROP_HW: np.array([c.shape[:2] for c in crops], dtype=np.int32),
        S.ENRICHED_TEXT: object_values(texts),
    }
