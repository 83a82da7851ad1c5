"""The recipe identity: which config fields and files decide an output, digested into model_version.

Each model section declares `IDENTITY` (the fields that change an output) and `OUTSIDE_IDENTITY` (every
other field, with its reason); the prompt files, a custom CLIP architecture and local weight files
count by content.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, NamedTuple, Optional, Tuple

from vlclip_core.llm.prompts import load_prompts, prompt_files


class RunIdentities(NamedTuple):
    """The identities one run keys its outputs and caches by."""

    model_version: str  # the embeddings' key: the whole recipe
    detector: str  # the grounding cache's key
    llm: str  # part of every text_hash: the enrichment cache's key


def digest(obj: Any) -> str:
    """sha256 of a JSON-able value (keys sorted), the digest of every identity and config hash."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "model"


def section_identity(section) -> dict:
    """The section's fields that change an output (its IDENTITY). A field added to IDENTITY after
    recipes were in use is left out while it holds the value that gives the outputs from before it
    existed (the section's IDENTITY_ADDED), so upgrading vlclip keeps every model_version and cache key
    and does not re-embed a catalog."""
    added = getattr(type(section), "IDENTITY_ADDED", {})
    return {
        name: getattr(section, name)
        for name in type(section).IDENTITY
        if not (name in added and getattr(section, name) == added[name])
    }


def prompt_digest(llm) -> str:
    """Content hash of the prompt files of `llm.prompt_version` (editing a prompt changes the recipe).

    Cached by the files' paths, sizes and modification times, so reading model_version repeatedly does
    not re-read the files while an edit in place is still seen.
    """
    return _prompt_digest(llm.prompt_dir, llm.prompt_version, prompt_files(llm))


@functools.lru_cache(maxsize=64)
def _prompt_digest(prompt_dir: str, version: str, stats: Tuple) -> str:
    del stats  # part of the cache key only
    prompts = load_prompts(_PromptRef(prompt_dir, version))
    return digest({"templates": prompts.templates, "system": prompts.system})[:16]


@dataclasses.dataclass(frozen=True)
class _PromptRef:
    prompt_dir: str
    prompt_version: str


def architecture_digest(clip) -> Optional[str]:
    """Content hash of clip.model_name's JSON in clip.config_dir (custom architectures), else None."""
    path = os.path.join(clip.config_dir, f"{clip.model_name}.json") if clip.config_dir else None
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:16]


# Weight files up to this size count by content; larger ones by (size, mtime) so that reading
# model_version never hashes gigabytes on the driver.
HASH_LIMIT_BYTES = 1 << 30


def weights_digest(path: Optional[str]) -> Optional[str]:
    """Content identity of a local checkpoint file or model directory (None for a hub id or tag), so a
    checkpoint overwritten in place under the same name changes the recipe.

    Cached by every file's (name, size, mtime_ns): repeated model_version reads stat, never re-hash.
    """
    if not path or not os.path.exists(path):
        return None
    return _weights_digest(path, _file_stats(path))


def _file_stats(path: str) -> Tuple:
    if os.path.isfile(path):
        st = os.stat(path)
        return (("", st.st_size, st.st_mtime_ns),)
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            found.append((os.path.relpath(os.path.join(root, name), path), st.st_size, st.st_mtime_ns))
    return tuple(found)


@functools.lru_cache(maxsize=64)
def _weights_digest(path: str, stats: Tuple) -> str:
    parts = []
    for rel, size, mtime_ns in stats:
        if size <= HASH_LIMIT_BYTES:
            parts.append([rel, size, _sha256(os.path.join(path, rel) if rel else path)])
        else:
            parts.append([rel, size, mtime_ns])
    return digest(parts)[:16]


def _sha256(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def llm_identity(config) -> str:
    """Identity of the enrichment recipe; part of every text_hash so caches never mix LLMs/prompts."""
    return digest(config.models.llm.identity())[:16]


def detector_identity(config) -> str:
    return digest(config.models.detector.identity())[:16]


def model_version(config) -> str:
    """Identity of the whole embedding recipe: every IDENTITY field, the prompt files and a custom
    CLIP architecture by content. Embeddings of different recipes never mix."""
    models = config.models
    recipe = {
        "detector": models.detector.identity(),
        "llm": models.llm.identity(),
        "clip": models.clip.identity(),
        "images": section_identity(config.images),
    }
    return f"{slug(models.clip.model_name)}-{digest(recipe)[:12]}"


def run_identities(config) -> RunIdentities:
    return RunIdentities(
        model_version=config.model_version, detector=detector_identity(config), llm=llm_identity(config)
    )
