"""Images that failed for good: recorded from a run's results, counted again, forgotten, skipped (Delta)."""

from __future__ import annotations

import datetime as dt

import pytest

from vlclip_core import schema as S
from vlclip_core.config import WarehouseConfig
from vlclip_core.selection.failed_images import TABLE, record_failures, split_known_failures
from vlclip_core.warehouse.tables import Tables

RESULT_DDL = "image_uri string, status string, error_stage string, error_type string, error_message string, "
RESULT_DDL += "image_sha string"


@pytest.fixture
def tables(spark, tmp_path):
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure(TABLE)
    return tables


def results(spark, rows):
    """Pipeline results: (image_uri, error_type) error rows of `stage`, or (image_uri, None) fetched rows."""
    full = [
        (uri, "ok", None, None, None, "sha")
        if error is None
        else (uri, "error", stage, error, f"{error}!", None)
        for uri, error, stage in rows
    ]
    return spark.createDataFrame(full, RESULT_DDL)


def remembered(tables):
    return {
        r.image_uri: (r.error_type, r.message, r.failures, r.run_id, r.first_failed_at is not None)
        for r in tables.read(TABLE).collect()
    }


def test_permanent_fetch_failures_are_remembered_counted_and_forgotten(spark, tables):
    record_failures(
        tables,
        results(
            spark,
            [
                ("u1", "http_404", "decode"),
                ("u1", "http_404", "decode"),  # the same image for two items: one row
                ("u2", "http_503", "decode"),  # may work next time: not remembered
                ("u3", "missing_file", "grounding"),  # not a fetch failure
                ("u4", None, None),
            ],
        ),
        "r1",
    )
    assert remembered(tables) == {"u1": ("http_404", "http_404!", 1, "r1", True)}
    first = tables.read(TABLE).first().first_failed_at
    record_failures(
        tables, results(spark, [("u1", "missing_file", "decode"), ("u5", "http_410", "decode")]), "r2"
    )
    assert remembered(tables) == {
        "u1": ("missing_file", "missing_file!", 2, "r2", True),
        "u5": ("http_410", "http_410!", 1, "r2", True),
    }
    assert tables.read(TABLE).where("image_uri = 'u1'").first().first_failed_at == first
    record_failures(tables, results(spark, [("u1", None, None)]), "r3")  # fetched after all
    assert set(remembered(tables)) == {"u5"}


def test_selection_skips_only_images_that_failed_within_the_window(spark, tables):
    now = dt.datetime.now(dt.timezone.utc)
    rows = [("recent", now - dt.timedelta(hours=1)), ("old", now - dt.timedelta(hours=30))]
    spark.createDataFrame(
        [(uri, "http_404", "m", 1, at, at, "r0") for uri, at in rows], tables.read(TABLE).schema
    ).write.format("delta").mode("append").save(tables.location(TABLE))
    work = spark.createDataFrame(
        [("a", "recent"), ("b", "old"), ("c", "never-failed"), ("d", "recent")],
        "item_id string, image_uri string",
    )
    kept, skipped = split_known_failures(work, tables, retry_after_hours=24)
    assert sorted(r.item_id for r in kept.collect()) == ["b", "c"]
    assert sorted(r.item_id for r in skipped.collect()) == ["a", "d"]
    everything, none = split_known_failures(work, tables, retry_after_hours=0)  # the memory is off
    assert everything is work and none is None
    assert S.IMAGE_URI in kept.columns
