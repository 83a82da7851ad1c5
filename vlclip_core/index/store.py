"""Where an index's files live: a local path or an fsspec URL (s3://, memory://), published by generation.

Layout of one index directory: `state.json` names the current generation, a subdirectory holding that
generation's files. A save writes a new generation, then replaces `state.json` (one object put on an
object store, a rename locally), then deletes the previous generation, so a reader that opens
`state.json` finds a complete set of files without needing an atomic directory rename.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Callable, Optional, Tuple

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


def filesystem(url: str):
    """(fsspec filesystem, path inside it) of a local path or URL."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def read_state(directory: str) -> Optional[dict]:
    fs, root = filesystem(directory)
    path = f"{root.rstrip('/')}/{STATE_FILE}"
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read().decode("utf-8"))


def generation(directory: str, state: dict) -> Tuple[object, str]:
    """(filesystem, path) of the files of the generation `state` names."""
    fs, root = filesystem(directory)
    root = root.rstrip("/")
    name = state.get("generation")
    return fs, f"{root}/{name}" if name else root


def publish(directory: str, write: Callable[[object, str], None], state: dict) -> None:
    """Run `write(fs, generation_path)` into a fresh generation, then make it the current one."""
    fs, root = filesystem(directory)
    root = root.rstrip("/")
    previous = read_state(directory)
    name = f"gen-{uuid.uuid4().hex[:16]}"
    fs.makedirs(f"{root}/{name}", exist_ok=True)
    write(fs, f"{root}/{name}")
    tmp = f"{root}/{STATE_FILE}.{name}.tmp"
    with fs.open(tmp, "wb") as fh:
        fh.write(json.dumps(dict(state, generation=name), indent=1, sort_keys=True).encode("utf-8"))
    fs.mv(tmp, f"{root}/{STATE_FILE}")
    _drop_previous(fs, root, previous)
    log.debug("index %s: generation %s published", directory, name)


def _drop_previous(fs, root: str, previous: Optional[dict]) -> None:
    if not previous:
        return
    if previous.get("generation"):
        fs.rm(f"{root}/{previous['generation']}", recursive=True)
        return
    for name in ("index.faiss", "ids.parquet"):  # a single-generation layout: files beside state.json
        if fs.exists(f"{root}/{name}"):
            fs.rm(f"{root}/{name}")
