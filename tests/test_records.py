"""The training_runs and evaluations rows on real Delta: MERGEd by key, a rerun updates its row."""

from __future__ import annotations

import datetime as dt

from vlclip_core.config import WarehouseConfig
from vlclip_core.train.pairs import PairsDataset
from vlclip_core.train.records import write_evaluations, write_training_run
from vlclip_core.train.trainer import TrainingReport
from vlclip_core.warehouse.tables import Tables

AT = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)


def test_a_training_run_keeps_one_row_that_follows_the_run(spark, tmp_path):
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    tables.ensure("training_runs")
    dataset = PairsDataset("ds1", "/p", "delta.`/wh/embeddings`", 3, "mv1", "none", {"train": 8, "eval": 2})
    report = TrainingReport(run_id="train-1", started_at=AT, dataset=dataset, model_name="tiny")
    write_training_run(tables, report)
    report.status, report.steps, report.losses = "succeeded", 2, [2.0, 1.5]
    report.hyper_parameters = {"lr": "0.001"}
    write_training_run(tables, report)
    rows = tables.read("training_runs").collect()
    assert len(rows) == 1
    row = rows[0].asDict()
    assert {k: row[k] for k in ("run_id", "status", "steps", "losses", "final_loss", "hyper_parameters")} == {
        "run_id": "train-1",
        "status": "succeeded",
        "steps": 2,
        "losses": [2.0, 1.5],
        "final_loss": 1.5,
        "hyper_parameters": {"lr": "0.001"},
    }
    assert (row["data_version"], row["train_items"], row["eval_items"], row["failed_items"]) == (
        3,
        8,
        2,
        None,
    )


def test_evaluation_rows_merge_by_their_key(spark, tmp_path):
    tables = Tables(spark, WarehouseConfig(path=str(tmp_path / "wh")))
    key = dict(model_version="mv1", eval_id="e1", ablation="none", task="text_to_image")
    write_evaluations(
        tables, [dict(key, product_type="shoe", mrr=0.5), dict(key, product_type="bag", mrr=0.25)]
    )
    write_evaluations(
        tables, [dict(key, product_type="shoe", mrr=0.75), dict(key, product_type="lamp", mrr=1.0)]
    )
    got = sorted((r.product_type, r.mrr) for r in tables.read("evaluations").collect())
    assert got == [("bag", 0.25), ("lamp", 1.0), ("shoe", 0.75)]
