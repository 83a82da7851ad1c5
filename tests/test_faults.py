"""Bad input and faults through the whole job, the run invariant checked after each (real Spark/Ray/HTTP)."""

from __future__ import annotations

import json
import os
import shutil
import time

import pyarrow as pa
import pytest
from http_fault_server import FaultServer, closed_port
from job_helpers import TEST_LLM_KEY, TEST_LLM_KEY_ENV, race_for_the_lock
from llm_server_helpers import FakeLLMServer

from vlclip_core.pipeline.watchdog import PipelineStalledError
from vlclip_core.run.audit import check_run
from vlclip_core.run.job import run_job
from vlclip_core.run.state import open_run
from vlclip_core.tools.sample_catalog import read_catalog, write_catalog
from vlclip_core.warehouse.locks import RunLock, RunLockedError
from vlclip_core.warehouse.tables import Tables

pytestmark = pytest.mark.usefixtures("ray_local")


def items(sample_root, images_dir, n, by_index=None):
    """n sample items whose images are copied into images_dir; by_index: {i: {column: value}}."""
    by_index = by_index or {}
    os.makedirs(images_dir, exist_ok=True)
    rows = read_catalog(str(sample_root / "catalog")).slice(0, n).to_pylist()
    for i, row in enumerate(rows):
        row["image_uri"] = shutil.copy(row["image_uri"], images_dir)
        row.update(by_index.get(i, {}))
    return rows


def write_rows(rows, path, schema):
    schema = pa.schema([f.with_nullable(True) for f in schema])
    return write_catalog(pa.Table.from_pylist(rows, schema=schema), str(path))


def assert_invariant(spark, config, run_id):
    state = open_run(config.warehouse.staging(), run_id)
    assert state is not None and state.status == "committed"
    assert check_run(spark, Tables(spark, config.warehouse), state) == []


def outcomes(spark, config, run_id):
    tables = Tables(spark, config.warehouse)
    errors = {
        r.item_id: (r.stage, r.error_type)
        for r in tables.read("embedding_errors").where(f"run_id = '{run_id}'").collect()
    }
    embedded = {r.item_id: r for r in tables.read("embeddings").collect()}
    return errors, embedded


def test_bad_inputs_become_error_rows_and_a_dead_llm_falls_back(
    spark, make_config, sample_root, tmp_path, caplog
):
    images = tmp_path / "images"
    schema = read_catalog(str(sample_root / "catalog")).schema
    with FaultServer(slow_s=3, big_bytes=200_000) as srv, FakeLLMServer(mode="status", status=500) as llm:
        good = items(
            sample_root,
            images,
            6,
            {
                3: {"item_id": "NO-TEXT", "title": "", "description": None},
                4: {"item_id": "LONG", "description": "Soft\x00 cotton\x07 tee. " + "keyword " * 30000},
                5: {"item_id": "SCRIPT", "title": "日本語の商品 Кроссовки для бега"},
            },
        )
        (images / "zero.jpg").write_bytes(b"")
        template = dict(good[0])
        bad = {
            "HTTP-404": srv.url("/404"),
            "HTTP-500": srv.url("/500"),
            "SLOW": srv.url("/slow"),
            "TRUNCATED": srv.url("/truncated.jpg"),
            "TEXT": srv.url("/text"),
            "EMPTY": srv.url("/empty"),
            "BIG": srv.url("/big"),
            "FLAKY": srv.url("/flaky"),
            "REFUSED": f"http://127.0.0.1:{closed_port()}/x.jpg",
            "FTP": "ftp://example.com/x.jpg",
            "OUTSIDE": "/etc/hostname",
            "ZERO": str(images / "zero.jpg"),
        }
        rows = good + [dict(template, item_id=k, image_uri=v) for k, v in bad.items()]
        catalog = write_rows(rows, tmp_path / "cat", schema)
        config = make_config(
            catalog,
            tmp_path / "wh",
            f"images.local_root={images}",
            "images.read_timeout_s=1",
            "images.connect_timeout_s=1",
            "images.retries=2",
            "images.backoff_s=0.05",
            "images.max_bytes=100000",
            "images.allowed_schemes=[file, http, https]",
            "images.allowed_hosts=[127.0.0.1]",  # the loopback test server; other internal hosts stay refused
            "models.llm.backend=openai",
            f"models.llm.base_url={llm.base_url}",
            "models.llm.model=fake-llm",
            f"models.llm.api_key_env={TEST_LLM_KEY_ENV}",
            "models.llm.retries=0",
            "models.llm.timeout_s=5",
            # 12 of 18 items fail on purpose: above the default thresholds
            "job.thresholds.max_failed.decode=1",
            "job.thresholds.max_failed.any=1",
            "job.thresholds.max_fallback.llm_error=1",  # the LLM is down on purpose
        )
        report = run_job(config, spark)
    errors, embedded = outcomes(spark, config, report.run_id)
    assert errors == {
        "HTTP-404": ("decode", "http_404"),
        "HTTP-500": ("decode", "http_500"),
        "SLOW": ("decode", "timeout"),
        "TRUNCATED": ("decode", "truncated_image"),
        "TEXT": ("decode", "not_an_image"),
        "EMPTY": ("decode", "empty_file"),
        "BIG": ("decode", "too_large"),
        "REFUSED": ("decode", "connection_error"),
        "FTP": ("decode", "scheme_not_allowed"),
        "OUTSIDE": ("decode", "path_not_allowed"),
        "ZERO": ("decode", "empty_file"),
        "NO-TEXT": ("enrichment", "empty_text"),
    }
    assert set(embedded) == {
        good[0]["item_id"],
        good[1]["item_id"],
        good[2]["item_id"],
        "LONG",
        "SCRIPT",
        "FLAKY",
    }
    assert srv.hits["/flaky"] == 3  # two transient 500s retried, then the image
    assert {r.enrichment_status for r in embedded.values()} == {"fallback"}  # the LLM endpoint is down
    long_text = embedded["LONG"].enriched_text
    assert (
        len(long_text) <= config.models.llm.max_chars and "\x00" not in long_text and "\x07" not in long_text
    )
    assert "Кроссовки" in embedded["SCRIPT"].enriched_text
    assert (report.status, report.items_embedded, report.items_failed) == ("succeeded", 6, 12)
    assert report.error_counts["empty_file"] == 2 and report.error_counts["http_404"] == 1
    assert_invariant(spark, config, report.run_id)
    # the key was sent to the endpoint, and appears nowhere in logs or tables
    assert f"Bearer {TEST_LLM_KEY}" in llm.auth_headers
    runs = Tables(spark, config.warehouse).read("runs").collect()
    messages = [r.message or "" for r in Tables(spark, config.warehouse).read("embedding_errors").collect()]
    assert TEST_LLM_KEY not in caplog.text + str(runs) + " ".join(messages)


def test_killed_actor_is_replaced_and_a_batch_that_keeps_killing_becomes_errors(
    spark, make_config, sample_root, tmp_path
):
    rows = items(
        sample_root,
        tmp_path / "images",
        6,
        {
            1: {"title": "POISON-ONCE kills its actor the first time"},
            4: {"item_id": "ALWAYS", "title": "POISON-ALWAYS kills every actor that touches it"},
        },
    )
    catalog = write_rows(rows, tmp_path / "cat", read_catalog(str(sample_root / "catalog")).schema)
    config = make_config(
        catalog,
        tmp_path / "wh",
        "stages.grounding.impl=tests.fault_stages:KillingGrounding",
        "stages.grounding.batch_size=1",
        "stages.decode.batch_size=1",  # one item per task
        "ray.max_batch_retries=1",
        "ray.max_tasks_in_flight_per_actor=1",
        "ray.stall_timeout_s=120",
    )
    report = run_job(config, spark)
    errors, embedded = outcomes(spark, config, report.run_id)
    assert errors == {"ALWAYS": ("pipeline", "batch_failed")}
    assert set(embedded) == {r["item_id"] for r in rows} - {"ALWAYS"}
    assert os.path.exists(rows[1]["image_uri"] + ".killed")  # the once-poisoned item did kill an actor
    assert_invariant(spark, config, report.run_id)


def test_a_stuck_stage_ends_the_run_naming_it_and_a_rerun_completes(
    spark, make_config, sample_root, tmp_path
):
    rows = items(sample_root, tmp_path / "images", 4, {2: {"title": "SLEEP: an LLM call that never returns"}})
    catalog = write_rows(rows, tmp_path / "cat", read_catalog(str(sample_root / "catalog")).schema)
    stuck = make_config(
        catalog,
        tmp_path / "wh",
        "stages.enrichment.impl=tests.fault_stages:SleepingEnrichment",
        "ray.stall_timeout_s=30",
        "stages.enrichment.batch_timeout_s=0",  # no deadline: the stall check is the last resort
        "stages.enrichment.item_timeout_s=0",
    )
    started = time.monotonic()
    with pytest.raises(PipelineStalledError, match="stage 'enrichment' has held a batch for"):
        run_job(stuck, spark)
    assert time.monotonic() - started < 240
    runs = Tables(spark, stuck.warehouse).read("runs").collect()
    assert [r.status for r in runs] == ["failed"] and "enrichment" in runs[0].message
    healthy = make_config(catalog, tmp_path / "wh", "ray.stall_timeout_s=300")  # same model_version
    report = run_job(healthy, spark)
    assert report.resumed and report.run_id == runs[0].run_id and report.items_embedded == 4
    assert_invariant(spark, healthy, report.run_id)


def test_merge_failure_after_ray_commits_on_rerun_without_models(
    spark, make_config, sample_root, tmp_path, monkeypatch
):
    import vlclip_core.run.commit as commit

    rows = items(sample_root, tmp_path / "images", 5)
    catalog = write_rows(rows, tmp_path / "cat", read_catalog(str(sample_root / "catalog")).schema)
    config = make_config(catalog, tmp_path / "wh")

    def broken_merge(*args, **kwargs):
        raise RuntimeError("simulated MERGE failure")

    monkeypatch.setattr(commit, "merge_embeddings", broken_merge)
    with pytest.raises(RuntimeError, match="simulated MERGE failure"):
        run_job(config, spark)
    monkeypatch.undo()
    (run_id,) = [
        r.run_id for r in Tables(spark, config.warehouse).read("runs").where("status = 'failed'").collect()
    ]
    assert open_run(config.warehouse.staging(), run_id).status == "processed"
    report = run_job(config, spark)
    assert report.resumed and report.run_id == run_id and "pipeline" not in report.phase_seconds
    assert report.items_embedded == 5 and Tables(spark, config.warehouse).read("embeddings").count() == 5
    assert_invariant(spark, config, run_id)


def test_a_second_run_on_the_same_warehouse_fails_clearly(spark, make_config, sample_root, tmp_path):
    config = make_config(sample_root / "catalog", tmp_path / "wh")
    with RunLock(config.warehouse.path, "another-run"):  # one lock per warehouse
        with pytest.raises(RunLockedError, match="another vlclip run holds"):
            run_job(config, spark)
    assert not os.path.exists(os.path.join(config.warehouse.path, "embeddings"))  # refused before any table


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    import socket

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "_LOCK").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    with RunLock(str(staging), "next") as lock:
        assert lock.held and json.loads((staging / "_LOCK").read_text())["pid"] == os.getpid()
    assert not (staging / "_LOCK").exists()


def test_the_delta_run_lock_admits_one_of_two_runs_at_once(spark, tmp_path):
    """warehouse.run_lock=delta (object-store staging): of two runs taking the lock at the same moment
    exactly one holds it; a third is refused while it is held; after release it can be taken again."""
    from vlclip_core.warehouse.locks import DeltaRunLock

    staging = str(tmp_path / "staging")
    DeltaRunLock(spark, staging, "warm").__enter__().__exit__()  # create the table outside the race
    outcomes, locks = race_for_the_lock(spark, staging)
    assert sorted(outcomes) == ["held", "refused"]
    with pytest.raises(
        RunLockedError, match=f"another vlclip run holds the lock table .*{locks[0].info['token']}"
    ):
        DeltaRunLock(spark, staging, "third").__enter__()
    locks[0].__exit__(None, None, None)
    with DeltaRunLock(spark, staging, "after") as lock:
        assert json.loads(lock.holder())["run"] == "after"
    assert DeltaRunLock(spark, staging, "x").holder() is None


def test_object_store_staging_takes_the_delta_lock_and_file_lock_is_refused():
    from vlclip_core.config import ConfigError, load_config
    from vlclip_core.warehouse.locks import DeltaRunLock, run_lock

    with pytest.raises(ConfigError, match="warehouse.run_lock=file needs a local or mounted staging"):
        load_config(
            "conf/tiny.yaml", ("warehouse.staging_dir=s3a://bucket/staging", "warehouse.run_lock=file")
        )
    assert isinstance(run_lock(None, "s3a://bucket/staging", "auto", "r"), DeltaRunLock)
    assert isinstance(run_lock(None, "/mnt/shared/staging", "auto", "r"), RunLock)
