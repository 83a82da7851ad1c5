"""Work-set selection (one classified plan) and the runs-row write, on real local Spark + Delta."""

from __future__ import annotations

from test_catalog import ROWS, write

from vlclip_core import schema as S
from vlclip_core.config import CatalogConfig, WarehouseConfig
from vlclip_core.run.report import RunReport, record_run
from vlclip_core.run.state import create_run
from vlclip_core.selection.catalog import load_hashed
from vlclip_core.selection.workset import CLASS, classify
from vlclip_core.warehouse.tables import Tables, table_schema

MV, LLM = "mv1", "llm1"


def embeddings_rows(spark, pairs, model_version=MV):
    """Minimal embeddings rows (item_id, content_hash) of one model_version."""
    from pyspark.sql import functions as F

    df = spark.createDataFrame(pairs, "item_id string, content_hash string")
    declared = table_schema(spark, "embeddings")
    cols = {
        S.ITEM_ID: F.col(S.ITEM_ID),
        S.CONTENT_HASH: F.col(S.CONTENT_HASH),
        S.MODEL_VERSION: F.lit(model_version),
    }
    return df.select(*[cols.get(f.name, F.lit(None)).cast(f.dataType).alias(f.name) for f in declared.fields])


def classes(spark, catalog, tables, mode="incremental"):
    df = classify(load_hashed(spark, CatalogConfig(path=catalog), MV), tables, mode, MV)
    return sorted((r[S.ITEM_ID] or "", r[CLASS]) for r in df.collect())


def test_each_catalog_row_gets_one_class(spark, tmp_path):
    catalog = write(
        spark,
        ROWS
        + [
            ("d", "t", None, None, None, None),
            ("e", "t", "u", None, None, None),
            ("e", "t2", "u", None, None, None),
        ],
        tmp_path / "cat",
    )
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure_all()
    hashes = {
        r.item_id: r.content_hash for r in load_hashed(spark, CatalogConfig(path=catalog), MV).collect()
    }
    # a: current; b: stored under another hash (changed); c: never embedded; "c" of another version
    # does not count; a duplicated stored row of "a" must not duplicate the work set; "z", stored but no
    # longer in the catalog, must not become a row of it.
    pairs = [("a", hashes["a"]), ("a", hashes["a"]), ("b", "x1:" + "0" * 32), ("z", "x1:" + "1" * 32)]
    embeddings_rows(spark, pairs).unionByName(
        embeddings_rows(spark, [("c", hashes["c"])], "mv0")
    ).write.format("delta").mode("append").save(tables.location("embeddings"))

    assert classes(spark, catalog, tables) == [
        ("a", "current"),
        ("b", "selected"),
        ("c", "selected"),
        ("d", "invalid"),
        ("e", "invalid"),
        ("e", "invalid"),
    ]
    assert classes(spark, catalog, tables, "backfill") == [
        ("a", "selected"),
        ("b", "selected"),
        ("c", "selected"),
        ("d", "invalid"),
        ("e", "invalid"),
        ("e", "invalid"),
    ]


def test_a_fresh_run_appends_its_row_and_a_repeated_write_keeps_one(spark, tmp_path):
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure_all()
    state = create_run(str(tmp_path / "staging"), "run-1", "incremental", MV, "cfg")
    report = RunReport(
        run_id="run-1", mode="incremental", model_version=MV, config_hash="cfg", status="failed"
    )
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
    report = RunReport(
        run_id="run-7",
        mode="backfill",
        model_version=MV,
        config_hash="cfg",
        status="succeeded",
        started_at=started,
        finished_at=started + dt.timedelta(hours=3),
        items_seen=12,
        items_embedded=2**40,
        stage_seconds={"clip": 1.25},
        phase_seconds={"select": 2},
        outcome_counts={"embedded": 9},
        error_counts={},
        message='it\'s "done"',
    )
    record_run(spark, tables, create_run(str(tmp_path / "staging"), "run-7", "backfill", MV, "cfg"), report)
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    try:
        (row,) = (
            tables.read("runs")
            .selectExpr(
                "*",
                "cast(started_at as string) AS started_utc",
                "cast(finished_at as string) AS finished_utc",
            )
            .collect()
        )
    finally:
        spark.conf.unset("spark.sql.session.timeZone")
    assert (row.started_utc, row.finished_utc) == ("2026-03-29 00:30:05", "2026-03-29 03:30:05")
    assert (row.run_id, row.mode, row.status, row.items_seen, row.items_embedded, row.items_failed) == (
        "run-7",
        "backfill",
        "succeeded",
        12,
        2**40,
        0,
    )
    assert (row.stage_seconds, row.phase_seconds) == (
        {"clip": 1.25},
        {"select": 2.0},
    ) and row.outcome_counts == {"embedded": 9}
    assert row.error_counts == {} and row.stage_items_per_s == {} and row.message == 'it\'s "done"'


def test_items_whose_image_failed_for_good_recently_are_skipped(spark, tmp_path):
    """failed_images holds b's image (failed 1 h ago) and c's (200 h ago): with a 168 h memory only b
    is skipped and counted; with the memory off (0 h) every item is staged."""
    import datetime as dt

    from vlclip_core.config import RunIdentities
    from vlclip_core.selection.workset import write_work_set

    catalog = write(spark, ROWS, tmp_path / "cat")
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure_all()
    now = dt.datetime.now()
    failed = [
        ("http://x/b.jpg", "http_404", "HTTP 404", 1, now - dt.timedelta(hours=1)),
        ("http://x/c.jpg", "missing_file", "gone", 3, now - dt.timedelta(hours=200)),
    ]
    rows = spark.createDataFrame(
        failed, "image_uri string, error_type string, message string, failures long, last_failed_at timestamp"
    )
    rows.withColumn("first_failed_at", rows.last_failed_at).withColumn(
        "run_id", rows.error_type
    ).write.format("delta").mode("append").save(tables.location("failed_images"))

    def stage(run_id, hours):
        state = create_run(str(tmp_path / "staging"), run_id, "incremental", MV, "cfg")
        counts = write_work_set(
            spark,
            load_hashed(spark, CatalogConfig(path=catalog), MV),
            tables,
            state,
            10,
            RunIdentities(MV, "det", LLM),
            hours,
        )
        staged = sorted(
            r.item_id for r in spark.read.parquet(state.path("input")).select(S.ITEM_ID).collect()
        )
        return (counts.items_seen, counts.items_selected, counts.items_skipped), staged, state.manifest

    counts, staged, manifest = stage("run-1", 168.0)
    assert counts == (3, 2, 1) and staged == ["a", "c"] and manifest["items_skipped"] == 1
    assert stage("run-2", 0.0)[:2] == ((3, 3, 0), ["a", "b", "c"])
