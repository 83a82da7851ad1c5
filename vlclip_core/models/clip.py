"""open_clip loader and batched image/text encoders returning L2-normalised float32 embeddings."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from vlclip_core.config import ClipConfig, ConfigError
from vlclip_core.models.device import pick_device, torch_dtype

log = logging.getLogger(__name__)

_REGISTERED_DIRS: set = set()


@dataclass(frozen=True)
class ImagePreprocess:
    """The model's eval-time image transform, applied to uint8 tensors in batches (no PIL round trip)."""

    size: Tuple[int, int]  # (height, width)
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # shortest (resize + centre crop) | longest (resize + pad) | squash
    fill_color: int = 0

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> "ImagePreprocess":
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg["size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(
            size=size,
            mean=_triple(cfg["mean"]),
            std=_triple(cfg["std"]),
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=cfg.get("resize_mode", "shortest"),
            fill_color=int(cfg.get("fill_color", 0)),
        )

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(n, 3, H, W) float32 model input from (h, w, 3) uint8 arrays; equal shapes are resized together."""
        out = torch.empty((len(images), 3) + self.size, dtype=torch.float32)
        for rows in _group_by_shape(images).values():
            pixels = torch.from_numpy(np.stack([images[i] for i in rows])).permute(0, 3, 1, 2)
            out[rows] = self._fit(pixels).float()
        out.div_(255.0)
        return TF.normalize(out, list(self.mean), list(self.std))

    def _fit(self, pixels: torch.Tensor) -> torch.Tensor:
        (h, w), (th, tw) = pixels.shape[-2:], self.size
        modes = TF.InterpolationMode
        mode = modes.BILINEAR if self.interpolation == "bilinear" else modes.BICUBIC
        if self.resize_mode == "squash":
            return TF.resize(pixels, [th, tw], interpolation=mode, antialias=True)
        if self.resize_mode == "shortest" and th == tw:
            # one size = shortest edge, exactly as open_clip's torchvision Resize
            resized = TF.resize(pixels, [th], interpolation=mode, antialias=True)
            return TF.center_crop(resized, [th, tw])
        scale = max(th / h, tw / w) if self.resize_mode == "shortest" else min(th / h, tw / w)
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        resized = TF.resize(pixels, size, interpolation=mode, antialias=True)
        return _center_crop_or_pad(resized, th, tw, self.fill_color)


class ClipEncoder:
    """An open_clip model with its tokenizer and batched preprocessing, on one device."""

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device, autocast_dtype: torch.dtype):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.preprocess = ImagePreprocess.from_model(model)
        self.dim = int(self.encode_texts([""]).shape[1])

    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dim) unit-norm float32 embeddings of (h, w, 3) uint8 RGB arrays."""
        if not len(images):
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        pixels = self.preprocess(images).to(self.device, non_blocking=True)
        with self._autocast():
            features = self.model.encode_image(pixels)
        return _unit_rows(features)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) unit-norm float32 embeddings; texts longer than the context length are truncated."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self._autocast():
            features = self.model.encode_text(tokens)
        return _unit_rows(features)

    def _autocast(self):
        if self.device.type == "cuda" and self.autocast_dtype != torch.float32:
            return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)
        return contextlib.nullcontext()


def load_clip(cfg: ClipConfig, device: str = "auto") -> ClipEncoder:
    """Load `cfg.model_name` with weights `cfg.pretrained` (open_clip tag or local checkpoint file).

    `device` is the fallback (models.device) when `cfg.device` is "auto". Example:
    `load_clip(ClipConfig(model_name="ViT-L-14", pretrained="openai"))`.
    """
    torch_device = pick_device(cfg.device, device)
    register_config_dir(cfg.config_dir)
    _check_model_name(cfg.model_name)
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            cfg.model_name, pretrained=cfg.pretrained or None, device=torch_device
        )
    except Exception as err:
        raise RuntimeError(
            f"cannot load CLIP model {cfg.model_name!r} with pretrained={cfg.pretrained!r}: "
            f"{type(err).__name__}: {err}"
        ) from err
    tokenizer = open_clip.get_tokenizer(cfg.model_name)
    log.info("loaded CLIP %s (%s) on %s", cfg.model_name, cfg.pretrained or "random weights", torch_device)
    return ClipEncoder(model, tokenizer, torch_device, torch_dtype(cfg.precision, torch_device))


def register_config_dir(config_dir: Optional[str]) -> None:
    """Add a directory of architecture JSONs to open_clip's registry (once per process)."""
    if not config_dir or config_dir in _REGISTERED_DIRS:
        return
    if not os.path.isdir(config_dir):
        raise ConfigError(f"models.clip.config_dir is not a directory: {config_dir!r}")
    open_clip.add_model_config(config_dir)
    _REGISTERED_DIRS.add(config_dir)


def _check_model_name(name: str) -> None:
    if ":" in name:  # hf-hub: / local-dir: schemas carry their own config
        return
    if open_clip.get_model_config(name.replace("/", "-")) is None:
        raise ConfigError(
            f"models.clip.model_name {name!r} is not a known open_clip architecture "
            f"(set models.clip.config_dir for custom ones)"
        )


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    return F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)


def _group_by_shape(images: Sequence[np.ndarray]) -> Dict[tuple, List[int]]:
    groups: Dict[tuple, List[int]] = {}
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {i} must be an (h, w, 3) uint8 array, got {image.dtype} {image.shape}")
        groups.setdefault(image.shape, []).append(i)
    return groups


def _center_crop_or_pad(pixels: torch.Tensor, th: int, tw: int, fill: int) -> torch.Tensor:
    h, w = pixels.shape[-2:]
    pad_h, pad_w = max(th - h, 0), max(tw - w, 0)
    if pad_h or pad_w:
        pads = [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2]
        pixels = TF.pad(pixels, pads, fill=fill)
    return TF.center_crop(pixels, [th, tw])


def _triple(values) -> Tuple[float, float, float]:
    values = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values] * 3))
    return values[0], values[1], values[2]
