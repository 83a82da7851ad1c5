"""Deterministic, nearly free stand-ins for the detector, the LLM and CLIP, so a run's cost is vlclip's own.

Selected through the normal config (conf/null.yaml): `models.detector.kind: null`, `models.llm.backend:
null`, `models.clip.model_name: null` (or `null-<dim>`). The real stage classes call them exactly as they
call the real models. Their outputs carry no meaning, but the same input always gives the same output:
an image's vector comes from a hash of its pixels, a text's from a hash of the text.
"""

from __future__ import annotations

import hashlib
import re
from typing import List, Sequence, Union

import numpy as np

from vlclip_core.config import ConfigError, DetectorConfig, LLMConfig
from vlclip_core.models.candidate import Candidate

NULL = "null"
DEFAULT_DIM = 512
_NAME = re.compile(r"null(?:-(\d{1,5}))?")
_DATA_BLOCK = re.compile(r"^<([a-z]+(?:_[a-z]+)*)>\n(.*?)\n</\1>$", re.MULTILINE | re.DOTALL)
_FIELD_LABEL = re.compile(r"^[A-Z][A-Za-z]*(?: [a-z]+){0,2}:\s*")


def is_null_clip(model_name: str) -> bool:
    return bool(_NAME.fullmatch(model_name or ""))


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
    return h.digest()


def hashed_unit_vectors(digests: Sequence[bytes], dim: int) -> np.ndarray:
    """(n, dim) float32 unit vectors, each seeded by one digest."""
    out = np.empty((len(digests), dim), dtype=np.float32)
    for row, digest in enumerate(digests):
        out[row] = np.random.default_rng(int.from_bytes(digest, "little")).standard_normal(dim, np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


class NullClipEncoder:
    """CLIP's encoder interface: an image's vector from its pixels and shape, a text's from its bytes."""

    def __init__(self, model_name: str = NULL):
        match = _NAME.fullmatch(model_name)
        if not match:
            raise ConfigError(f"models.clip.model_name must be null or null-<dim>, got {model_name!r}")
        self.dim = int(match.group(1) or DEFAULT_DIM)
        if self.dim < 1:
            raise ConfigError(f"models.clip.model_name={model_name!r}: the dimension must be >= 1")

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        digests = [_digest(b"image", str(i.shape).encode(), np.ascontiguousarray(i).data) for i in images]
        return hashed_unit_vectors(digests, self.dim)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return hashed_unit_vectors([_digest(b"text", str(t).encode("utf-8")) for t in texts], self.dim)


class NullDetector:
    """The detector's interface: one box per image, margins and score derived from the pixels and prompt."""

    kind = NULL

    def __init__(self, cfg: DetectorConfig):
        self.box_threshold = cfg.box_threshold

    def detect(self, images: Sequence[np.ndarray], prompt: str) -> List[List[Candidate]]:
        return [[self._box(img, prompt)] for img in images]

    def _box(self, image: np.ndarray, prompt: str) -> Candidate:
        sample = np.ascontiguousarray(image[::8, ::8]).tobytes()  # a strided sample: cheap on any size
        d = _digest(b"box", prompt.encode("utf-8"), str(image.shape).encode(), sample)
        x0, y0, x1, y1 = (d[0] % 20) / 100, (d[1] % 20) / 100, 1 - (d[2] % 20) / 100, 1 - (d[3] % 20) / 100
        score = max(self.box_threshold, 0.5 + (d[4] / 255) * 0.5)
        return Candidate((x0, y0, x1, y1), float(score))


class NullChatBackend:
    """The chat backend's interface: the reply is the values of the first data block of the conversation's
    last message ("Title: Red mug" -> "Red mug."), or that whole message when it has none,
    whitespace-collapsed and cut at models.llm.max_chars. So it carries the item's title and attribute
    values, as a summary must, at a summary's length: the agent's checks read what a real reply gives them."""

    def __init__(self, cfg: LLMConfig):
        self.max_chars = cfg.max_chars

    def chat(self, conversations: Sequence[Sequence[dict]]) -> List[Union[str, Exception]]:
        return [self._reply(messages) for messages in conversations]

    def _reply(self, messages: Sequence[dict]) -> str:
        content = str(messages[-1].get("content", "")) if messages else ""
        block = _DATA_BLOCK.search(content)
        if block:
            values = (_FIELD_LABEL.sub("", line).strip() for line in block.group(2).splitlines())
            content = " ".join(v if v.endswith(".") else v + "." for v in values if v)
        text = " ".join(content.split())
        if len(text) <= self.max_chars:
            return text
        cut = text[:self.max_chars]
        return cut.rsplit(" ", 1)[0] if " " in cut else cut
