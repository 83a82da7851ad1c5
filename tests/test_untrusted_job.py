"""Secrets through the whole job: credentials in models.llm.base_url reach the LLM server and nothing else
(no log line, no error row, no runs row, no file of the warehouse); real Spark, Ray and HTTP."""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pytest
from llm_server_helpers import FakeLLMServer

from vlclip_core.run.job import run_job
from vlclip_core.tools.sample_catalog import read_catalog, write_catalog
from vlclip_core.warehouse.tables import Tables

pytestmark = pytest.mark.usefixtures("ray_local")


def small_catalog(sample_root, path, n):
    table = read_catalog(str(sample_root / "catalog")).slice(0, n)
    schema = pa.schema([f.with_nullable(True) for f in table.schema])
    return write_catalog(pa.Table.from_pylist(table.to_pylist(), schema=schema), str(path))


def files_containing(root, needle: bytes) -> list:
    hits = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                if needle in fh.read():
                    hits.append(path)
    return hits


def ray_logs_dir():
    import ray

    node = getattr(ray._private.worker, "_global_node", None)  # the local Ray of the ray_local fixture
    return node.get_logs_dir_path() if node is not None else None


def test_llm_credentials_in_base_url_appear_in_no_log_row_or_warehouse_file(
    spark, make_config, sample_root, tmp_path, caplog, capfd
):
    password = f"pw-{uuid.uuid4().hex}"
    user = f"svc-{uuid.uuid4().hex[:12]}"
    catalog = small_catalog(sample_root, tmp_path / "cat", 4)
    with FakeLLMServer(mode="status", status=503) as llm:
        port = llm.base_url.split(":")[2].split("/")[0]
        config = make_config(
            catalog,
            tmp_path / "wh",
            "models.llm.backend=openai",
            f"models.llm.base_url=http://{user}:{password}@127.0.0.1:{port}/v1",
            "models.llm.model=fake-llm",
            "models.llm.retries=0",
            "models.llm.on_error=error",  # every item becomes an error row quoting the LLM error
            "job.thresholds.on_breach=degraded",
            "ray.stall_timeout_s=900",  # a loaded 2-core machine can go minutes without stage progress
        )
        report = run_job(config, spark)
    assert llm.auth_headers and all(h.startswith("Basic ") for h in llm.auth_headers)  # they were used
    tables = Tables(spark, config.warehouse)
    errors = tables.read("embedding_errors").where(f"run_id = '{report.run_id}'").collect()
    assert sorted(r.error_type for r in errors) == ["llm_error"] * 4
    runs = tables.read("runs").collect()
    captured = capfd.readouterr()
    for secret in (password, user):
        assert files_containing(tmp_path / "wh", secret.encode()) == []
        assert secret not in caplog.text and secret not in captured.out + captured.err
        assert secret not in str(runs) and all(secret not in r.message for r in errors)
        logs = ray_logs_dir()
        assert logs is None or files_containing(logs, secret.encode()) == []
    # the rows still say where the call went (so the search above looked at real messages)
    assert all(f"http://127.0.0.1:{port}/v1/chat/completions answered HTTP 503" in r.message for r in errors)
