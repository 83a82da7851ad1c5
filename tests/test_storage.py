"""The staging filesystem helpers on real local files, as plain paths and as file:// URIs."""

from __future__ import annotations

import json
import os

import pyarrow.fs as pafs
import pytest

from vlclip_core import storage


@pytest.fixture(params=["path", "file_uri"])
def root(request, tmp_path):
    """The same temporary directory, named as a plain path or as a file:// URI."""
    return str(tmp_path) if request.param == "path" else f"file://{tmp_path}"


def test_is_local_tells_mounted_paths_from_object_stores():
    assert storage.is_local("/data/staging") and storage.is_local("relative/dir")
    assert storage.is_local("file:///data/staging")
    assert not storage.is_local("s3a://bucket/staging") and not storage.is_local("hdfs://nn/staging")


def test_resolve_maps_local_forms_to_one_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri in ("sub/dir", f"{tmp_path}/sub/dir", f"file://{tmp_path}/sub/dir"):
        fs, path = storage.resolve(uri)
        assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/sub/dir"


def test_join_adds_one_separator():
    assert storage.join("s3a://b/root/", "run", "manifest.json") == "s3a://b/root/run/manifest.json"
    assert storage.join("/tmp/x", "a") == "/tmp/x/a"


def test_json_round_trip_leaves_no_temporary_file(root, tmp_path):
    uri = storage.join(root, "run-1", "manifest.json")
    assert not storage.exists(uri)
    storage.write_json(uri, {"b": 2, "a": [1, "x"]})
    storage.write_json(uri, {"b": 3})  # replaced through a move, never appended to
    assert storage.exists(uri) and storage.read_json(uri) == {"b": 3}
    assert os.listdir(tmp_path / "run-1") == ["manifest.json"]
    assert json.loads((tmp_path / "run-1" / "manifest.json").read_text()) == {"b": 3}


def test_list_dir_names_entries_sorted_and_empty_when_absent(root, tmp_path):
    assert storage.list_dir(storage.join(root, "missing")) == []
    storage.makedirs(storage.join(root, "d", "shard_id=1"))
    storage.write_json(storage.join(root, "d", "b.json"), {})
    storage.write_json(storage.join(root, "d", "a.json"), {})
    assert storage.list_dir(storage.join(root, "d")) == ["a.json", "b.json", "shard_id=1"]


def test_deletes_remove_what_exists_and_ignore_what_does_not(root, tmp_path):
    storage.write_json(storage.join(root, "out", "shard_id=0", "part.json"), {})
    storage.write_json(storage.join(root, "lock.json"), {})
    storage.delete_file(storage.join(root, "lock.json"))
    storage.delete_dir(storage.join(root, "out"))
    storage.delete_file(storage.join(root, "lock.json"))
    storage.delete_dir(storage.join(root, "out"))
    assert sorted(os.listdir(tmp_path)) == []


def test_spark_path_makes_plain_paths_absolute_and_keeps_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.spark_path("staging/run") == f"{tmp_path}/staging/run"
    assert storage.spark_path("s3a://bucket/x") == "s3a://bucket/x"
    assert storage.spark_path("file:///data/x") == "file:///data/x"
