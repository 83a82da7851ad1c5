"""The training_runs and evaluations Delta tables: rows MERGEd by key, so reruns never duplicate."""

from __future__ import annotations

from typing import List

from vlclip_core import schema as S
from vlclip_core.warehouse.tables import Tables, literal_row, table_schema, upsert


def write_training_run(tables: Tables, report) -> None:
    """Upsert the run's row by run_id (a resumed run keeps one row)."""
    ds = report.dataset
    values = {
        "run_id": report.run_id,
        "status": report.status,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "data_table": ds.data_table,
        "data_version": ds.data_version,
        "data_model_version": ds.data_model_version,
        "dataset_id": ds.dataset_id,
        "ablation": ds.ablation,
        "train_items": ds.counts.get("train"),
        "eval_items": ds.counts.get("eval"),
        "failed_items": ds.counts.get("failed"),
        "model_name": report.model_name,
        "init_checkpoint": report.init_checkpoint,
        "output_checkpoint": report.output_checkpoint,
        "output_model_version": report.output_model_version,
        "hyper_parameters": report.hyper_parameters,
        "steps": report.steps,
        "resumed_from_step": report.resumed_from_step,
        "losses": report.losses or None,
        "final_loss": report.losses[-1] if report.losses else None,
        "pairs_per_s": report.pairs_per_s,
        "config_hash": report.config_hash,
        "message": report.message,
    }
    row = literal_row(tables.spark, table_schema(tables.spark, "training_runs"), values)
    upsert(tables, "training_runs", row, ("run_id",))


def write_evaluations(tables: Tables, rows: List[dict]) -> None:
    """Upsert evaluation rows by (model_version, eval_id, ablation, task, product_type)."""
    tables.ensure("evaluations")
    tables.add_missing_columns("evaluations")
    schema = table_schema(tables.spark, "evaluations")
    df = tables.spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in rows], schema)
    upsert(tables, "evaluations", df, S.EVAL_KEY)
