"""End-to-end runs of the job: real local Spark + Delta, real local Ray, tiny real models."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest
from job_helpers import TEST_ITEMS

from vlclip_core.config import WarehouseConfig
from vlclip_core.run.job import run_job
from vlclip_core.run.state import RunState
from vlclip_core.selection.catalog import CatalogSchemaError
from vlclip_core.tools.sample_catalog import read_catalog, write_catalog
from vlclip_core.warehouse.tables import Tables

pytestmark = pytest.mark.usefixtures("ray_local")
TINY_DIM = 32


def embeddings(spark, config):
    return Tables(spark, config.warehouse).read("embeddings")


def copy_catalog(src_dir, dest, mutate=None):
    table = read_catalog(str(src_dir))
    return write_catalog(mutate(table) if mutate else table, str(dest))


def clone_warehouse(src, dest):
    shutil.copytree(src, dest)
    lock = os.path.join(dest, "_staging", "_LOCK")
    assert not os.path.exists(lock)
    return dest


@pytest.fixture(scope="module")
def first(spark, tiny_models, sample_root, tmp_path_factory):
    """One incremental run over the sample catalog into a fresh warehouse."""
    from job_helpers import job_overrides

    from vlclip_core.config import load_config

    root = tmp_path_factory.mktemp("first")
    catalog = copy_catalog(sample_root / "catalog", root / "catalog")
    config = load_config("conf/tiny.yaml", job_overrides(tiny_models, catalog, str(root / "wh")))
    report = run_job(config, spark)
    return {"root": root, "catalog": catalog, "config": config, "report": report}


def test_first_run_embeds_every_valid_item_with_unit_norm(spark, first):
    report, config = first["report"], first["config"]
    assert (report.status, report.items_selected, report.items_embedded, report.items_failed) == (
        "succeeded",
        TEST_ITEMS,
        TEST_ITEMS,
        0,
    )
    assert report.detector_calls == TEST_ITEMS and report.llm_calls >= TEST_ITEMS
    rows = embeddings(spark, config).collect()
    assert sorted(r.item_id for r in rows) == sorted(
        read_catalog(first["catalog"]).column("item_id").to_pylist()
    )
    for row in rows:
        assert row.model_version == config.model_version and row.embedding_dim == TINY_DIM
        for vector in (row.image_embedding, row.text_embedding, row.embedding):
            assert len(vector) == TINY_DIM
            assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
        assert row.enrichment_status in ("ok", "refined", "fallback") and row.enriched_text
        assert len(row.grounding_box) == 4 and row.run_id == report.run_id
    runs = Tables(spark, config.warehouse).read("runs").where(f"run_id = '{report.run_id}'").collect()
    assert len(runs) == 1 and runs[0].status == "succeeded" and runs[0].items_embedded == TEST_ITEMS
    assert runs[0].stage_items_per_s["clip"] > 0
    assert runs[0].outcome_counts["embedded"] == TEST_ITEMS and "failed_decode" not in runs[0].outcome_counts


def test_auto_layout_fuses_the_stages_on_cpus_and_embeds_what_the_split_layout_does(
    spark, first, make_config, tmp_path
):
    auto = ("stages.layout=auto", "stages.decode.num_actors=auto")  # the tiny profile as it ships
    config = make_config(first["catalog"], tmp_path / "wh", *auto)
    report = run_job(config, spark)
    assert (report.status, report.items_embedded) == ("succeeded", TEST_ITEMS)
    fused, split = report.pipeline_stats, first["report"].pipeline_stats
    assert {stage: st["pool"] for stage, st in fused.items()} == {
        "decode": "decode", "grounding": "fused", "enrichment": "fused", "clip": "fused"
    }  # the test Ray has 2 CPUs and no GPU
    assert {stage: st["pool"] for stage, st in split.items()} == {s: s for s in split} and len(split) == 4
    for stats in (fused, split):
        assert all(st["busy_s"] > 0 and 1 <= st["actors_max"] <= st["actors"] for st in stats.values())
        assert all(st["idle_s"] <= st["actor_seconds"] for st in stats.values())
    assert max(fused[s]["actors"] for s in fused) <= 2  # one fused actor per core at most
    # what does not depend on how items are batched is the same (the random tiny detector's boxes do:
    # Grounding DINO pads a batch's images to the largest)
    columns = ("item_id", "text_embedding", "enriched_text", "enrichment_status")
    ours = {r.item_id: r for r in embeddings(spark, config).select(*columns).collect()}
    theirs = {r.item_id: r for r in embeddings(spark, first["config"]).select(*columns).collect()}
    assert sorted(ours) == sorted(theirs) and len(ours) == TEST_ITEMS
    for item, row in ours.items():
        assert (row.enriched_text, row.enrichment_status) == (
            theirs[item].enriched_text, theirs[item].enrichment_status
        )
        assert np.allclose(row.text_embedding, theirs[item].text_embedding, atol=1e-5)


def test_ray_starts_while_spark_writes_the_work_set_and_not_when_nothing_is_selected(
    spark, first, make_config, tmp_path, monkeypatch
):
    import threading

    from vlclip_core.run import job
    from vlclip_core.selection import workset

    started, real_init, real_write = threading.Event(), job.init_ray, workset._write_work
    calls = []

    def init_ray(cfg):
        calls.append(threading.current_thread() is threading.main_thread())
        started.set()
        real_init(cfg)

    def write_work(spark, work, tables, state, n_selected, *args):
        # the selection is counted: the main thread starts Ray while this (staging) thread writes
        calls.append(started.wait(timeout=120) if n_selected else "nothing to write")
        return real_write(spark, work, tables, state, n_selected, *args)

    monkeypatch.setattr(job, "init_ray", init_ray)
    monkeypatch.setattr(workset, "_write_work", write_work)
    report = run_job(make_config(first["catalog"], tmp_path / "wh", "job.mode=backfill"), spark)
    assert report.items_embedded == TEST_ITEMS
    assert calls[:2] == [True, True]  # Ray started from the main thread, before the write finished
    calls.clear()
    warehouse = clone_warehouse(first["root"] / "wh", tmp_path / "noop")
    assert run_job(make_config(first["catalog"], warehouse), spark).items_selected == 0
    assert calls == ["nothing to write"]  # and Ray was never started


def test_contact_sheet_shows_the_latest_run(spark, first, tmp_path):
    from vlclip_core.tools.inspect_run import write_contact_sheet

    out = write_contact_sheet(first["config"], None, str(tmp_path / "sheet.html"), limit=5, spark=spark)
    html = open(out, encoding="utf-8").read()
    ids = sorted(read_catalog(first["catalog"]).column("item_id").to_pylist())[:5]
    assert all(item_id in html for item_id in ids) and html.count("data:image/png;base64,") == 5


def test_items_that_left_the_catalog_are_deleted_when_configured(spark, first, make_config, tmp_path):
    warehouse = clone_warehouse(first["root"] / "wh", tmp_path / "wh")
    ids = read_catalog(first["catalog"]).column("item_id").to_pylist()
    catalog = copy_catalog(first["catalog"], tmp_path / "cat", lambda t: t.slice(2))
    kept = run_job(make_config(catalog, warehouse), spark)
    assert kept.items_removed == 0 and embeddings(spark, first["config"]).count() == TEST_ITEMS
    report = run_job(make_config(catalog, warehouse, "job.removed_items=delete"), spark)
    assert (report.items_selected, report.items_removed) == (0, 2)
    config = make_config(catalog, warehouse)
    assert sorted(r.item_id for r in embeddings(spark, config).collect()) == sorted(ids[2:])


def test_second_run_with_nothing_changed_selects_nothing_and_runs_no_model(
    spark, first, make_config, tmp_path
):
    warehouse = clone_warehouse(first["root"] / "wh", tmp_path / "wh")
    config = make_config(first["catalog"], warehouse)
    before = {r.item_id: r.updated_at for r in embeddings(spark, config).collect()}
    report = run_job(config, spark)
    assert (report.items_seen, report.items_selected, report.items_embedded) == (TEST_ITEMS, 0, 0)
    assert (report.detector_calls, report.llm_calls) == (0, 0)
    assert "pipeline" not in report.phase_seconds  # the Ray pipeline never started
    assert {r.item_id: r.updated_at for r in embeddings(spark, config).collect()} == before


def test_changed_description_reembeds_exactly_that_item(spark, first, make_config, tmp_path):
    warehouse = clone_warehouse(first["root"] / "wh", tmp_path / "wh")
    target = read_catalog(first["catalog"]).column("item_id")[3].as_py()

    def change(table: pa.Table) -> pa.Table:
        desc = table.column("description").to_pylist()
        desc[3] = "Completely new description: now made of recycled canvas."
        return table.set_column(table.schema.get_field_index("description"), "description", pa.array(desc))

    catalog = copy_catalog(first["catalog"], tmp_path / "cat", change)
    config = make_config(catalog, warehouse)
    old = {r.item_id: r for r in embeddings(spark, config).collect()}
    report = run_job(config, spark)
    assert (report.items_selected, report.items_embedded, report.detector_calls) == (1, 1, 0)
    assert 2 <= report.llm_calls <= 1 + 2 * config.models.llm.max_rounds  # one agent chain, one item
    rows = embeddings(spark, config).collect()
    assert len(rows) == TEST_ITEMS and len({r.item_id for r in rows}) == TEST_ITEMS
    changed = [r for r in rows if r.run_id == report.run_id]
    assert [r.item_id for r in changed] == [target]
    assert changed[0].content_hash != old[target].content_hash
    assert all(r.content_hash == old[r.item_id].content_hash for r in rows if r.item_id != target)


def test_new_clip_checkpoint_reembeds_all_under_new_version_from_caches(spark, first, make_config, tmp_path):
    from vlclip_core.models.tiny import build_tiny_clip

    warehouse = clone_warehouse(first["root"] / "wh", tmp_path / "wh")
    other = build_tiny_clip(str(tmp_path / "clip2"), seed=1)
    config = make_config(first["catalog"], warehouse, f"models.clip.pretrained={other['checkpoint']}")
    old_version = first["config"].model_version
    assert config.model_version != old_version
    report = run_job(config, spark)
    assert (report.items_selected, report.items_embedded) == (TEST_ITEMS, TEST_ITEMS)
    assert (report.detector_calls, report.llm_calls) == (0, 0)  # boxes and texts come from the caches
    counts = {
        r["model_version"]: r["count"]
        for r in embeddings(spark, config).groupBy("model_version").count().collect()
    }
    assert counts == {old_version: TEST_ITEMS, config.model_version: TEST_ITEMS}
    old = embeddings(spark, config).where(f"model_version = '{old_version}'").collect()
    assert {r.run_id for r in old} == {first["report"].run_id}


def test_backfill_interrupted_after_a_shard_resumes_and_finishes_once(
    spark, first, make_config, tmp_path, monkeypatch
):
    config = make_config(first["catalog"], tmp_path / "wh", "job.mode=backfill", "stages.clip.batch_size=4")
    real_mark = RunState.mark_shard_done
    marked = []

    def mark_then_die(self, shard, summary):
        real_mark(self, shard, summary)
        marked.append(shard)
        raise KeyboardInterrupt("simulated kill after one shard")

    monkeypatch.setattr(RunState, "mark_shard_done", mark_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_job(config, spark)
    monkeypatch.setattr(RunState, "mark_shard_done", real_mark)
    staging = tmp_path / "wh" / "_staging"
    (run_dir,) = [p for p in staging.iterdir() if not p.name.startswith("_")]
    marker = run_dir / "done" / f"shard-{marked[0]}.json"
    finished = (marker.read_text(), marker.stat().st_mtime_ns)
    report = run_job(config, spark)
    assert report.resumed and report.run_id == run_dir.name and report.items_embedded == TEST_ITEMS
    assert (marker.read_text(), marker.stat().st_mtime_ns) == finished  # the finished shard is not redone
    ids = [r.item_id for r in embeddings(spark, config).collect()]
    assert len(ids) == TEST_ITEMS and len(set(ids)) == TEST_ITEMS


def test_catalog_without_image_uri_fails_before_any_model_work(spark, first, make_config, tmp_path):
    catalog = copy_catalog(first["catalog"], tmp_path / "cat", lambda t: t.drop(["image_uri"]))
    config = make_config(catalog, tmp_path / "wh")
    with pytest.raises(CatalogSchemaError, match="missing required column 'image_uri'"):
        run_job(config, spark)
    runs = Tables(spark, config.warehouse).read("runs").collect()
    assert [(r.status, r.items_selected) for r in runs] == [("failed", 0)]
    assert "image_uri" in runs[0].message
    assert not any((tmp_path / "wh" / "_staging").glob("*/output"))


def test_invalid_catalog_rows_become_error_rows(spark, first, make_config, tmp_path):
    def add_bad_rows(table: pa.Table) -> pa.Table:
        schema = pa.schema([f.with_nullable(True) for f in table.schema])
        good = table.slice(0, 3).cast(schema)
        template = good.slice(0, 1).to_pylist()[0]
        bad = [
            dict(template, item_id=None),
            dict(template, item_id="DUP-1"),
            dict(template, item_id="DUP-1"),
            dict(template, item_id="NO-URI", image_uri=None),
            dict(template, item_id="MISSING-FILE", image_uri=str(tmp_path / "nope.jpg")),
        ]
        return pa.concat_tables([good, pa.Table.from_pylist(bad, schema=schema)])

    catalog = copy_catalog(first["catalog"], tmp_path / "cat", add_bad_rows)
    config = make_config(catalog, tmp_path / "wh")
    report = run_job(config, spark)
    assert (report.items_seen, report.items_invalid, report.items_selected) == (8, 4, 4)
    assert (report.items_embedded, report.items_failed) == (3, 5)
    errors = Tables(spark, config.warehouse).read("embedding_errors").where(f"run_id = '{report.run_id}'")
    got = sorted((r.item_id or "", r.stage, r.error_type) for r in errors.collect())
    assert got == [
        ("", "catalog", "null_item_id"),
        ("DUP-1", "catalog", "duplicate_item_id"),
        ("DUP-1", "catalog", "duplicate_item_id"),
        ("MISSING-FILE", "decode", "missing_file"),
        ("NO-URI", "catalog", "missing_image_uri"),
    ]
    assert report.error_counts == {
        "null_item_id": 1,
        "duplicate_item_id": 2,
        "missing_file": 1,
        "missing_image_uri": 1,
    }
    assert embeddings(spark, config).where("item_id = 'DUP-1' OR item_id IS NULL").count() == 0


def test_delete_keeps_items_whose_catalog_row_is_duplicated_or_invalid(spark, first, make_config, tmp_path):
    """Only an id in no catalog row is deleted: a duplicated id or a row without image_uri is still in the
    catalog (an error row of the run), so its earlier embedding stays."""
    warehouse = clone_warehouse(first["root"] / "wh", tmp_path / "wh")
    ids = read_catalog(first["catalog"]).column("item_id").to_pylist()

    def mutate(table: pa.Table) -> pa.Table:
        rows = [r for r in table.to_pylist() if r["item_id"] != ids[0]]
        rows += [dict(r) for r in rows if r["item_id"] == ids[1]]  # ids[1] twice
        for r in rows:
            if r["item_id"] == ids[2]:
                r["image_uri"] = None
        return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in table.schema]))

    catalog = copy_catalog(first["catalog"], tmp_path / "cat", mutate)
    config = make_config(catalog, warehouse, "job.removed_items=delete")
    report = run_job(config, spark)
    assert (report.items_invalid, report.items_selected, report.items_removed) == (3, 0, 1)
    assert sorted(r.item_id for r in embeddings(spark, config).collect()) == sorted(ids[1:])


def test_delete_refuses_to_remove_most_of_the_table(spark, first, make_config, tmp_path):
    """A truncated catalog (4 of 24 items) must not wipe the version: the run fails, nothing is deleted;
    with job.max_removed_fraction=1 the same catalog deletes the other 20."""
    from vlclip_core.run.thresholds import RunThresholdError

    warehouse = clone_warehouse(first["root"] / "wh", tmp_path / "wh")
    catalog = copy_catalog(first["catalog"], tmp_path / "cat", lambda t: t.slice(0, 4))
    config = make_config(catalog, warehouse, "job.removed_items=delete")
    with pytest.raises(RunThresholdError, match="would delete 20 of 24 embeddings"):
        run_job(config, spark)
    assert embeddings(spark, config).count() == TEST_ITEMS
    report = run_job(
        make_config(catalog, warehouse, "job.removed_items=delete", "job.max_removed_fraction=1"), spark
    )
    assert report.items_removed == 20 and embeddings(spark, config).count() == 4


def _missing_images(first, tmp_path, n):
    """The catalog with the first n items' images pointing at files that do not exist."""

    def mutate(table: pa.Table) -> pa.Table:
        uris = table.column("image_uri").to_pylist()
        uris[:n] = [str(tmp_path / f"gone-{i}.png") for i in range(n)]
        return table.set_column(table.schema.get_field_index("image_uri"), "image_uri", pa.array(uris))

    return copy_catalog(first["catalog"], tmp_path / "cat", mutate)


def test_a_run_where_every_item_fails_is_failed_and_merges_nothing(spark, first, make_config, tmp_path):
    """12 changed items whose images are gone: 12/12 fail at decode, over job.thresholds (50 %). The run
    is recorded as failed, its error rows and the failed images are written, no embedding changes; the
    next run does not fetch those images again (skipped, counted) and succeeds."""
    from vlclip_core.run.thresholds import RunThresholdError

    warehouse = clone_warehouse(first["root"] / "wh", tmp_path / "wh")
    catalog = _missing_images(first, tmp_path, 12)
    config = make_config(catalog, warehouse)
    before = {r.item_id: r.content_hash for r in embeddings(spark, config).collect()}
    with pytest.raises(RunThresholdError, match=r"failed at decode: 12/12 \(100%\) > 50%"):
        run_job(config, spark)
    tables = Tables(spark, config.warehouse)
    assert {r.item_id: r.content_hash for r in embeddings(spark, config).collect()} == before
    (run,) = [r for r in tables.read("runs").collect() if r.status == "failed"]
    assert (
        run.items_selected,
        run.items_embedded,
        run.items_failed,
        run.outcome_counts["failed_decode"],
    ) == (12, 0, 12, 12)
    assert "thresholds breached" in run.message
    errors = tables.read("embedding_errors").where(f"run_id = '{run.run_id}'").collect()
    assert len(errors) == 12 and {e.error_type for e in errors} == {"missing_file"}
    failed = tables.read("failed_images").collect()
    assert sorted(r.image_uri for r in failed) == sorted(str(tmp_path / f"gone-{i}.png") for i in range(12))
    manifest = json.loads((warehouse / "_staging" / run.run_id / "manifest.json").read_text())
    assert manifest["status"] == "failed"  # final: the next run starts afresh instead of resuming it
    # the next run skips the 12 images that failed for good; skipped items count as decode failures
    # (an image host that is gone must not pass for a normal night), so it breaches again
    with pytest.raises(RunThresholdError, match=r"failed at decode: 12/12 \(100%\) > 50%"):
        run_job(config, spark)
    again = [r for r in tables.read("runs").collect() if r.status == "failed" and r.run_id != run.run_id]
    assert [(r.items_selected, r.items_skipped, r.items_embedded) for r in again] == [(0, 12, 0)]
    assert tables.read("failed_images").count() == 12


def test_a_degraded_run_merges_and_exits_3(spark, first, tiny_models, tmp_path, capsys):
    """on_breach=degraded: the 21 good items are merged, the 3 failures breach a 5 % decode limit, the
    run is recorded as degraded and the entry point exits 3."""
    from job_helpers import job_overrides

    from jobs.embed_catalog import EXIT_DEGRADED, main

    warehouse = clone_warehouse(first["root"] / "wh", tmp_path / "wh")
    catalog = _missing_images(first, tmp_path, 3)
    sets = job_overrides(tiny_models, catalog, str(warehouse)) + (
        "job.mode=backfill",
        "job.thresholds.on_breach=degraded",
        "job.thresholds.max_failed.decode=0.05",
    )
    code = main(["--config", "conf/tiny.yaml", *[a for o in sets for a in ("--set", o)]])
    assert code == EXIT_DEGRADED == 3
    assert (
        "run degraded: thresholds breached (job.thresholds): failed at decode: 3/24 (12%) > 5%"
        in capsys.readouterr().err
    )
    (run,) = (
        Tables(spark, WarehouseConfig(path=str(warehouse)))
        .read("runs")
        .where("status = 'degraded'")
        .collect()
    )
    assert (run.items_selected, run.items_embedded, run.items_failed) == (24, 21, 3)
