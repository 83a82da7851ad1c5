"""Work-set selection (one classified plan) and the runs-row write, on real local Spark + Delta."""
from __future__ import annotations

import logging

from test_catalog import ROWS, write

from vlclip_core import schema as S
from vlclip_core.catalog import load_hashed, load_valid_and_invalid
from vlclip_core.config import CatalogConfig, WarehouseConfig
from vlclip_core.job import RunReport, record_run
from vlclip_core.runs import create_run
from vlclip_core.tables import HASH_SCHEME_PROPERTY, Tables, table_schema
from vlclip_core.workset import CLASS, classify

MV, LLM = "mv1", "llm1"


def embeddings_rows(spark, pairs, model_version=MV):
    """Minimal embeddings rows (item_id, content_hash) of one model_version."""
    from pyspark.sql import functions as F

    df = spark.createDataFrame(pairs, "item_id string, content_hash string")
    declared = table_schema(spark, "embeddings")
    cols = {S.ITEM_ID: F.col(S.ITEM_ID), S.CONTENT_HASH: F.col(S.CONTENT_HASH), S.MODEL_VERSION: F.lit(model_version)}
    return df.select(*[cols.get(f.name, F.lit(None)).cast(f.dataType).alias(f.name) for f in declared.fields])


def classes(spark, catalog, tables, mode="incremental", compare_legacy=False):
    df = classify(load_hashed(spark, CatalogConfig(path=catalog), MV), tables, mode, MV, compare_legacy)
    return sorted((r[S.ITEM_ID] or "", r[CLASS]) for r in df.collect())


def test_each_catalog_row_gets_one_class(spark, tmp_path):
    catalog = write(spark, ROWS + [("d", "t", None, None, None, None), ("e", "t", "u", None, None, None),
                                   ("e", "t2", "u", None, None, None)], tmp_path / "cat")
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure_all()
    hashes = {r.item_id: r.content_hash for r in
              load_valid_and_invalid(spark, CatalogConfig(path=catalog), MV, LLM)[0].collect()}
    # a: current; b: stored under another hash (changed); c: never embedded; "c" of another version
    # does not count; a duplicated stored row of "a" must not duplicate the work set; "z", stored but no
    # longer in the catalog, must not become a row of it.
    pairs = [("a", hashes["a"]), ("a", hashes["a"]), ("b", "x1:" + "0" * 32), ("z", "x1:" + "1" * 32)]
    embeddings_rows(spark, pairs).unionByName(embeddings_rows(spark, [("c", hashes["c"])], "mv0")) \
        .write.format("delta").mode("append").save(tables.location("embeddings"))

    assert classes(spark, catalog, tables) == [
        ("a", "current"), ("b", "selected"), ("c", "selected"), ("d", "invalid"), ("e", "invalid"), ("e", "invalid")]
    assert classes(spark, catalog, tables, "backfill") == [
        ("a", "selected"), ("b", "selected"), ("c", "selected"), ("d", "invalid"), ("e", "invalid"), ("e", "invalid")]


def test_a_fresh_run_appends_its_row_and_a_repeated_write_keeps_one(spark, tmp_path):
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure_all()
    state = create_run(str(tmp_path / "staging"), "run-1", "incremental", MV, "cfg")
    report = RunReport(run_id="run-1", mode="incremental", model_version=MV, config_hash="cfg", status="failed")
    record_run(spark, tables, state, report)
    assert tables.delta("runs").history(1).first()["operation"] == "WRITE"
    report.status = "succeeded"
    record_run(spark, tables, state, report)  # the resumed run: same run_id, the row is replaced
    assert tables.delta("runs").history(1).first()["operation"] == "MERGE"
    assert [(r.run_id, r.status) for r in tables.read("runs").collect()] == [("run-1", "succeeded")]


def test_the_runs_row_keeps_every_value(spark, tmp_path):
    """The row is built from typed literals: timestamps (UTC-aware), maps (empty too), nulls and
    counts must read back exactly as the report held them."""
    import datetime as dt

    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure_all()
    started = dt.datetime(2026, 3, 29, 0, 30, 5, tzinfo=dt.timezone.utc)  # a DST change in Europe
    report = RunReport(run_id="run-7", mode="backfill", model_version=MV, config_hash="cfg", status="succeeded",
                       started_at=started, finished_at=started + dt.timedelta(hours=3), items_seen=12,
                       items_embedded=2 ** 40, stage_seconds={"clip": 1.25, "phase_select": 2},
                       outcome_counts={"embedded": 9}, error_counts={}, message="it's \"done\"")
    record_run(spark, tables, create_run(str(tmp_path / "staging"), "run-7", "backfill", MV, "cfg"), report)
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    try:
        (row,) = tables.read("runs").selectExpr("*", "cast(started_at as string) AS started_utc",
                                                "cast(finished_at as string) AS finished_utc").collect()
    finally:
        spark.conf.unset("spark.sql.session.timeZone")
    assert (row.started_utc, row.finished_utc) == ("2026-03-29 00:30:05", "2026-03-29 03:30:05")
    assert (row.run_id, row.mode, row.status, row.items_seen, row.items_embedded, row.items_failed) == \
        ("run-7", "backfill", "succeeded", 12, 2 ** 40, 0)
    assert row.stage_seconds == {"clip": 1.25, "phase_select": 2.0} and row.outcome_counts == {"embedded": 9}
    assert row.error_counts == {} and row.stage_items_per_s == {} and row.message == 'it\'s "done"'


def test_rows_stored_with_the_legacy_hash_stay_current(spark, tmp_path, caplog):
    """A table written by the first release (SHA-256 content hashes) must not be re-embedded by an
    upgrade; a changed item is still found, and a foreign hash of neither scheme counts as changed."""
    from vlclip_core.catalog import legacy_content_hash, normalise, read_catalog
    from vlclip_core.workset import stage_work

    catalog = write(spark, ROWS, tmp_path / "cat")
    legacy = {r.item_id: r.legacy for r in normalise(read_catalog(spark, CatalogConfig(path=catalog)))
              .select(S.ITEM_ID, legacy_content_hash(MV).alias("legacy")).collect()}
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure_all()
    pairs = [("a", legacy["a"]), ("b", legacy["b"]), ("c", legacy["c"][::-1])]
    embeddings_rows(spark, pairs).write.format("delta").mode("append").save(tables.location("embeddings"))
    # the plain plan only labels them; the second plan compares them in their scheme
    assert classes(spark, catalog, tables) == [("a", "legacy"), ("b", "legacy"), ("c", "legacy")]
    assert classes(spark, catalog, tables, compare_legacy=True) == [("a", "current"), ("b", "current"),
                                                                     ("c", "selected")]
    edited = write(spark, [ROWS[0][:3] + ("softer",) + ROWS[0][4:]] + ROWS[1:], tmp_path / "edited")
    assert classes(spark, edited, tables, compare_legacy=True) == [("a", "selected"), ("b", "current"),
                                                                    ("c", "selected")]

    caplog.set_level(logging.INFO, logger="vlclip_core.workset")

    def stage(run_id):
        caplog.clear()
        state = create_run(str(tmp_path / "staging"), run_id, "incremental", MV, "cfg")
        counts = stage_work(spark, load_hashed(spark, CatalogConfig(path=edited), MV), tables, state, 10, "det",
                            (MV, LLM))
        assert (counts.items_seen, counts.items_selected, counts.items_invalid) == (3, 2, 0)
        staged = spark.read.parquet(state.path("input")).select(S.ITEM_ID, S.CONTENT_HASH).collect()
        assert sorted(r.item_id for r in staged) == ["a", "c"]
        assert all(r.content_hash.startswith("x1:") for r in staged)  # written back under the current scheme
        return "second pass" in caplog.text

    # a table this release made, holding such rows anyway: the plain plan meets them, a second one compares
    assert HASH_SCHEME_PROPERTY in tables.properties("embeddings") and stage("run-1")
    # a table the first release made (no scheme property): compared in the one plan
    spark.sql(f"ALTER TABLE {tables.ref('embeddings')} UNSET TBLPROPERTIES ('{HASH_SCHEME_PROPERTY}')")
    assert HASH_SCHEME_PROPERTY not in tables.properties("embeddings") and not stage("run-2")
