"""Exactly once under retries and stale resumes: each test injects a real fault (a failing write, a
killed or failed attempt, a changed recipe) and checks that no item is duplicated, reverted or lost."""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlclip_core import schema as S
from vlclip_core.config import WarehouseConfig
from vlclip_core.pipeline.shard_writer import write_shard_parts
from vlclip_core.warehouse.tables import Tables, merge_embeddings, table_schema

DIM = 4


def writer_batch(ids, shards, embedding=None):
    """A batch as the CLIP stage hands it to the writer: ok rows with unit vectors."""
    n = len(ids)
    vectors = np.tile(np.eye(DIM, dtype=np.float32)[0], (n, 1)) if embedding is None else embedding
    return {
        S.ITEM_ID: np.array(ids, dtype=object),
        S.SHARD_ID: np.array(shards, dtype=np.int32),
        S.CONTENT_HASH: np.array([f"h-{i}" for i in ids], dtype=object),
        S.STATUS: np.full(n, S.STATUS_OK, dtype=object),
        S.ERROR_STAGE: np.full(n, None, dtype=object),
        S.ERROR_TYPE: np.full(n, None, dtype=object),
        S.ERROR_MESSAGE: np.full(n, None, dtype=object),
        S.EMBEDDING: vectors,
        S.IMAGE_EMBEDDING: vectors.copy(),
        S.TEXT_EMBEDDING: vectors.copy(),
    }


def shard_rows(out_dir, shard):
    return pq.read_table(str(out_dir / f"shard_id={shard}"), partitioning=None)


def test_a_retried_writer_task_replaces_its_part_instead_of_adding_rows(tmp_path):
    """The writer task writes shard 0's part, then fails on shard 1's (a real filesystem error);
    Ray retries the task: shard 0 must hold its rows once."""
    out = tmp_path / "output"
    out.mkdir()
    (out / "shard_id=1").write_text("not a directory")  # the second part write fails
    batch = writer_batch(["a", "b", "c", "d"], [0, 0, 1, 1])
    with pytest.raises(OSError):
        write_shard_parts(batch, str(out))
    assert sorted(shard_rows(out, 0).column(S.ITEM_ID).to_pylist()) == ["a", "b"]  # the first part landed
    (out / "shard_id=1").unlink()
    write_shard_parts(batch, str(out))  # the retry
    assert sorted(shard_rows(out, 0).column(S.ITEM_ID).to_pylist()) == ["a", "b"]
    assert sorted(shard_rows(out, 1).column(S.ITEM_ID).to_pylist()) == ["c", "d"]


def test_non_finite_vectors_become_error_rows_of_the_clip_stage(tmp_path):
    vectors = np.tile(np.eye(DIM, dtype=np.float32)[0], (3, 1))
    vectors[1, 2] = np.nan
    vectors[2, 0] = np.inf
    summary = write_shard_parts(writer_batch(["ok", "nan", "inf"], [0, 0, 0], vectors), str(tmp_path))
    assert (summary["ok"][0], summary["errors"][0]) == (1, 2)
    rows = {r[S.ITEM_ID]: r for r in shard_rows(tmp_path, 0).to_pylist()}
    assert rows["ok"][S.STATUS] == S.STATUS_OK
    for item in ("nan", "inf"):
        assert (rows[item][S.STATUS], rows[item][S.ERROR_STAGE], rows[item][S.ERROR_TYPE]) == (
            S.STATUS_ERROR,
            "clip",
            "non_finite_vector",
        )


def test_a_shard_is_done_only_once_its_rows_on_disk_are_its_items_once_each(tmp_path):
    """A retried batch regrouped by Ray wrote item b twice: finishing the shard keeps one row per item,
    and a shard whose item never arrived is not done."""
    from vlclip_core.pipeline.runner import finish_shard
    from vlclip_core.run.state import create_run

    state = create_run(str(tmp_path / "staging"), "r1", "incremental", "mv", "ch")
    os.makedirs(state.shard_input(0))
    pq.write_table(pa.table({S.ITEM_ID: ["a", "b", "c"]}), state.path("input", "shard_id=0", "p.parquet"))
    state.save(shards={"0": 3})
    out = state.path("output")
    write_shard_parts(writer_batch(["a", "b"], [0, 0]), out)
    assert not finish_shard(state, 0) and state.done_shards() == set()  # c is missing
    write_shard_parts(writer_batch(["b", "c"], [0, 0]), out)
    assert finish_shard(state, 0)
    ids = pq.read_table(state.shard_output(0), partitioning=None).column(S.ITEM_ID).to_pylist()
    assert sorted(ids) == ["a", "b", "c"]
    with open(state.path("done", "shard-0.json")) as fh:
        done = json.load(fh)
    assert (done["rows"], done["ok"], done["errors"]) == (3, 3, 0)


def embedding_rows(spark, ids, run_id="r1", content="h"):
    schema = table_schema(spark, "embeddings")
    now = dt.datetime.now(dt.timezone.utc)
    rows = [
        {
            S.ITEM_ID: i,
            S.MODEL_VERSION: "mv",
            S.CONTENT_HASH: f"{content}-{i}",
            S.EMBEDDING: [1.0, 0.0],
            "embedding_dim": 2,
            S.RUN_ID: run_id,
            S.UPDATED_AT: now,
        }
        for i in ids
    ]
    return spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in rows], schema)


def test_a_merge_source_with_a_repeated_key_is_refused_before_any_write(spark, tmp_path):
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure("embeddings")
    with pytest.raises(RuntimeError, match=r"repeats key\(s\) \('item_id',\): \('b',\)") as err:
        merge_embeddings(tables, embedding_rows(spark, ["a", "b", "b"]), "mv", update_unchanged=False)
    assert type(err.value).__name__ == "DuplicateKeyError"
    assert tables.read("embeddings").count() == 0


# --- whole-job faults (real local Spark + Delta + Ray, tiny models) -------------------------------


def small_catalog(sample_root, tmp_path, n, by_index=None, name="cat"):
    """A catalog of the first n sample items (images copied under tmp_path); by_index: {i: {col: value}}."""
    import shutil

    from vlclip_core.tools.sample_catalog import read_catalog, write_catalog

    table = read_catalog(str(sample_root / "catalog")).slice(0, n)
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        row["image_uri"] = shutil.copy(row["image_uri"], images)
        row.update((by_index or {}).get(i, {}))
    schema = pa.schema([f.with_nullable(True) for f in table.schema])
    return write_catalog(pa.Table.from_pylist(rows, schema=schema), str(tmp_path / name))


def fail_first_merge(monkeypatch):
    """The next embeddings MERGE raises (a transient warehouse failure); later ones run."""
    import vlclip_core.run.commit as commit

    real = commit.merge_embeddings

    def failing(*args, **kwargs):
        monkeypatch.setattr(commit, "merge_embeddings", real)
        raise RuntimeError("injected: the warehouse was unreachable")

    monkeypatch.setattr(commit, "merge_embeddings", failing)


@pytest.mark.usefixtures("ray_local")
def test_a_run_resumed_by_id_with_a_changed_prompt_fails_before_any_work(
    spark, make_config, sample_root, tmp_path, monkeypatch
):
    import shutil

    from vlclip_core.config import ConfigError
    from vlclip_core.run.job import run_job
    from vlclip_core.run.state import open_run

    prompts = tmp_path / "prompts"
    shutil.copytree("conf/prompts", prompts)
    catalog = small_catalog(sample_root, tmp_path, 3)
    before = make_config(catalog, tmp_path / "wh", f"models.llm.prompt_dir={prompts}", "job.run_id=night-1")
    old_version, old_hash = before.model_version, before.config_hash
    fail_first_merge(monkeypatch)
    with pytest.raises(RuntimeError, match="injected"):
        run_job(before, spark)
    with open(prompts / "v1" / "system.txt", "a") as fh:
        fh.write("\nAlways mention the colour.\n")
    after = make_config(catalog, tmp_path / "wh", f"models.llm.prompt_dir={prompts}", "job.run_id=night-1")
    assert after.model_version != old_version
    with pytest.raises(ConfigError) as err:
        run_job(after, spark)
    assert old_version in str(err.value) and after.model_version in str(err.value)
    assert old_hash in str(err.value) and after.config_hash in str(err.value)
    tables = Tables(spark, before.warehouse)
    assert tables.read("embeddings").count() == 0
    assert open_run(before.warehouse.staging(), "night-1").status == "processed"  # untouched, resumable


def llm_overrides(base_url):
    return (
        "models.llm.backend=openai",
        f"models.llm.base_url={base_url}",
        "models.llm.model=fake-llm",
        "models.llm.retries=0",
        "models.llm.timeout_s=5",
    )


@pytest.mark.usefixtures("ray_local")
def test_items_that_fell_back_while_the_llm_was_down_are_selected_again(
    spark, make_config, sample_root, tmp_path
):
    """The LLM endpoint is down for the whole run (nothing listens on its port): the run breaches
    max_fallback.llm_error (degraded here, so its fallback rows are merged); once the endpoint is
    back, the next run selects those items again and replaces their fallback text."""
    from llm_server_helpers import FakeLLMServer, answer_each_step, free_closed_port

    from vlclip_core.run.job import run_job

    catalog = small_catalog(sample_root, tmp_path, 4)
    down = make_config(
        catalog,
        tmp_path / "wh",
        *llm_overrides(f"http://127.0.0.1:{free_closed_port()}/v1"),
        "job.thresholds.on_breach=degraded",
        "job.thresholds.min_items=4",
    )
    report = run_job(down, spark)
    assert report.status == "degraded" and "llm_error fallback: 4/4" in report.message
    stored = {r.item_id: r for r in Tables(spark, down.warehouse).read("embeddings").collect()}
    assert len(stored) == 4 and {r.enrichment_status for r in stored.values()} == {"fallback"}
    with FakeLLMServer(responder=answer_each_step) as llm:
        up = make_config(catalog, tmp_path / "wh", *llm_overrides(llm.base_url), "job.thresholds.min_items=4")
        assert up.model_version == down.model_version
        again = run_job(up, spark)
    assert (again.status, again.items_selected, again.items_embedded) == ("succeeded", 4, 4)
    assert len(llm.requests) >= 4 and again.llm_calls >= 4  # every item was sent to the LLM again
    rows = Tables(spark, up.warehouse).read("embeddings").collect()
    assert len(rows) == 4 and {r.run_id for r in rows} == {again.run_id}
    assert not any(r.needs_rerun for r in rows)  # the LLM answered: final until the content changes


def test_a_row_is_never_overwritten_by_a_run_that_started_before_its_writer(spark, tmp_path):
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure_all()
    t = [dt.datetime(2026, 1, d, tzinfo=dt.timezone.utc) for d in (1, 2, 3)]

    def merge(run_id, started, content):
        src = embedding_rows(spark, ["a"], run_id, content).withColumn(
            S.RUN_STARTED_AT, __import__("pyspark.sql.functions", fromlist=["lit"]).lit(started)
        )
        merge_embeddings(tables, src, "mv", update_unchanged=False)
        return tables.read("embeddings").collect()

    assert [(r.run_id, r.content_hash) for r in merge("new", t[1], "v2")] == [("new", "v2-a")]
    assert [(r.run_id, r.content_hash) for r in merge("stale", t[0], "v1")] == [("new", "v2-a")]
    assert [(r.run_id, r.content_hash) for r in merge("newer", t[2], "v3")] == [("newer", "v3-a")]


@pytest.mark.usefixtures("ray_local")
def test_an_unfinished_run_older_than_a_committed_one_is_abandoned_not_resumed(
    spark, make_config, sample_root, tmp_path, monkeypatch
):
    """Run A processes its items, then its commit fails; run B (job.resume=false) commits a newer
    description of item 0; the next plain run must not resume A (that would revert item 0)."""
    from vlclip_core.config import ConfigError
    from vlclip_core.run.job import run_job
    from vlclip_core.run.state import open_run

    catalog = small_catalog(sample_root, tmp_path, 3)
    config = make_config(catalog, tmp_path / "wh")
    fail_first_merge(monkeypatch)
    with pytest.raises(RuntimeError, match="injected"):
        run_job(config, spark)
    staging = config.warehouse.staging()
    (run_a,) = [n for n in os.listdir(staging) if not n.startswith("_")]
    newer = small_catalog(sample_root, tmp_path, 3, {0: {"description": "Now in a brighter red."}}, "cat2")
    report_b = run_job(make_config(newer, tmp_path / "wh", "job.resume=false"), spark)
    assert report_b.run_id != run_a and report_b.items_embedded == 3
    tables = Tables(spark, config.warehouse)
    current = {r.item_id: (r.content_hash, r.run_id) for r in tables.read("embeddings").collect()}
    rerun = run_job(make_config(newer, tmp_path / "wh"), spark)
    assert rerun.run_id not in (run_a, report_b.run_id) and rerun.items_selected == 0
    assert {r.item_id: (r.content_hash, r.run_id) for r in tables.read("embeddings").collect()} == current
    assert open_run(staging, run_a).status == "abandoned"
    assert [r.status for r in tables.read("runs").where(f"run_id = '{run_a}'").collect()] == ["abandoned"]
    with pytest.raises(ConfigError, match=f"run {run_a} is already abandoned"):
        run_job(make_config(newer, tmp_path / "wh", f"job.run_id={run_a}"), spark)


@pytest.mark.usefixtures("ray_local")
def test_a_rerun_completes_the_runs_row_of_a_run_that_failed_after_its_commit(
    spark, make_config, sample_root, tmp_path, monkeypatch
):
    """The runs-row write fails once after the commit (a transient warehouse error): the merged run
    must not be recorded as failed, and the next run writes its row as succeeded."""
    import vlclip_core.run.report as report_module
    from vlclip_core.run.audit import check_run
    from vlclip_core.run.job import run_job
    from vlclip_core.run.state import open_run

    real = report_module.write_run

    def failing(*args, **kwargs):
        monkeypatch.setattr(report_module, "write_run", real)
        raise RuntimeError("injected: the runs table was unreachable")

    catalog = small_catalog(sample_root, tmp_path, 3)
    config = make_config(catalog, tmp_path / "wh")
    monkeypatch.setattr(report_module, "write_run", failing)
    with pytest.raises(RuntimeError, match="injected"):
        run_job(config, spark)
    staging = config.warehouse.staging()
    (run_a,) = [n for n in os.listdir(staging) if not n.startswith("_")]
    tables = Tables(spark, config.warehouse)
    assert tables.read("runs").where("status = 'failed'").count() == 0
    rerun = run_job(config, spark)
    assert rerun.run_id != run_a and rerun.items_selected == 0
    (row,) = tables.read("runs").where(f"run_id = '{run_a}'").collect()
    assert (row.status, row.items_selected, row.items_embedded) == ("succeeded", 3, 3)
    assert check_run(spark, tables, open_run(staging, run_a)) == []


def test_failed_images_counts_a_failure_once_per_run_and_prunes_old_rows(spark, tmp_path):
    """The commit's failed_images write is retried (same run): its failure counts once; a later run
    counts it again; rows whose last failure is past the retention are deleted."""
    from vlclip_core.selection.failed_images import record_failures

    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure_all()
    old = dt.datetime.now() - dt.timedelta(days=90)
    spark.createDataFrame(
        [("http://x/old.jpg", "http_404", "HTTP 404", 4, old, old, "r0")],
        "image_uri string, error_type string, message string, failures long, first_failed_at timestamp, "
        "last_failed_at timestamp, run_id string",
    ).write.format("delta").mode("append").save(tables.location("failed_images"))
    results = spark.createDataFrame(
        [("http://x/a.jpg", S.STATUS_ERROR, "decode", "http_404", "HTTP 404", None)],
        f"{S.IMAGE_URI} string, {S.STATUS} string, {S.ERROR_STAGE} string, {S.ERROR_TYPE} string, "
        f"{S.ERROR_MESSAGE} string, {S.IMAGE_SHA} string",
    )

    def failures():
        return {r.image_uri: r.failures for r in tables.read("failed_images").collect()}

    record_failures(tables, results, "r1")
    record_failures(tables, results, "r1")  # the same run's commit, retried
    assert failures() == {"http://x/a.jpg": 1, "http://x/old.jpg": 4}
    record_failures(tables, results, "r2", 30.0)  # a later run, with a 30-day retention
    assert failures() == {"http://x/a.jpg": 2}


def test_vlclip_abandon_drops_an_unfinished_run_for_good(
    spark, make_config, tiny_models, sample_root, tmp_path
):
    from job_helpers import job_overrides

    from vlclip_core.config import ConfigError
    from vlclip_core.run.job import run_job
    from vlclip_core.run.state import create_run, open_run
    from vlclip_core.tools.cli import main

    config = make_config(sample_root / "catalog", tmp_path / "wh")
    Tables(spark, config.warehouse).ensure_all()
    staging = config.warehouse.staging()
    create_run(staging, "killed-1", "incremental", config.model_version, config.config_hash)
    overrides = job_overrides(tiny_models, str(sample_root / "catalog"), str(tmp_path / "wh"))
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["abandon", "killed-1", "--config", "conf/tiny.yaml", *sets]) == 0
    assert open_run(staging, "killed-1").status == "abandoned"
    (row,) = Tables(spark, config.warehouse).read("runs").collect()
    assert (row.run_id, row.status) == ("killed-1", "abandoned")
    assert main(["abandon", "killed-1", "--config", "conf/tiny.yaml", *sets]) == 1
    with pytest.raises(ConfigError, match="run killed-1 is already abandoned"):
        run_job(make_config(sample_root / "catalog", tmp_path / "wh", "job.run_id=killed-1"), spark)


@pytest.mark.usefixtures("ray_local")
def test_the_delete_of_a_resumed_run_reads_the_catalog_snapshot_it_staged_from(
    spark, make_config, sample_root, tmp_path, monkeypatch
):
    """Run A stages a Delta catalog (version 0) and its commit fails; the catalog is rewritten (version
    1, two items gone); A's resumed commit must delete against version 0, not the rewritten catalog."""
    from vlclip_core.run.job import run_job
    from vlclip_core.run.state import open_run

    staged = spark.read.parquet(small_catalog(sample_root, tmp_path, 3))
    catalog = str(tmp_path / "delta_cat")
    staged.write.format("delta").save(catalog)
    overrides = ("job.removed_items=delete", "job.max_removed_fraction=1")
    config = make_config(catalog, tmp_path / "wh", *overrides)
    fail_first_merge(monkeypatch)
    with pytest.raises(RuntimeError, match="injected"):
        run_job(config, spark)
    (run_a,) = [n for n in os.listdir(config.warehouse.staging()) if not n.startswith("_")]
    staged.limit(1).write.format("delta").mode("overwrite").save(catalog)  # version 1: two items gone
    resumed = run_job(config, spark)
    assert resumed.run_id == run_a and (resumed.items_embedded, resumed.items_removed) == (3, 0)
    assert open_run(config.warehouse.staging(), run_a).manifest["catalog_version"] == 0
    tables = Tables(spark, config.warehouse)
    assert tables.read("embeddings").count() == 3
    later = run_job(config, spark)  # a new run stages (and deletes against) version 1
    assert later.run_id != run_a and later.items_removed == 2
    assert tables.read("embeddings").count() == 1
