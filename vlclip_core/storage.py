"""Filesystem helpers for the staging directory: local paths or any pyarrow filesystem URI (s3://, ...)."""

from __future__ import annotations

import json
import os
import uuid
from typing import List, Tuple

import pyarrow.fs as pafs


def is_local(uri: str) -> bool:
    """A plain path or a file:// URI (a local or mounted filesystem), not an object store."""
    return "://" not in uri or uri.startswith("file://")


def resolve(uri: str) -> Tuple[pafs.FileSystem, str]:
    """Return (filesystem, path) for a local path or a filesystem URI."""
    if is_local(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri.replace("file://", "", 1))
    return pafs.FileSystem.from_uri(uri)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


def write_json(uri: str, obj: dict) -> None:
    """Write JSON through a temporary name and a move, so readers never see half a file."""
    fs, path = resolve(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as out:
        out.write(json.dumps(obj, indent=1, sort_keys=True, default=str).encode())
    fs.move(tmp, path)


def read_json(uri: str) -> dict:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as inp:
        return json.loads(inp.read().decode())


def list_dir(uri: str) -> List[str]:
    """Names (not paths) of the entries directly under `uri`; empty when it does not exist."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(os.path.basename(info.path) for info in infos)


def delete_dir(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def delete_file(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_file(path)


def spark_path(uri: str) -> str:
    """The form of `uri` that Spark and Ray readers accept (absolute for local paths)."""
    return os.path.abspath(uri) if "://" not in uri else uri
