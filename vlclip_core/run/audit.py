"""The run invariant: every selected item ends in `embeddings` or in this run's errors, exactly once."""

from __future__ import annotations

from typing import List

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.run.state import RunState
from vlclip_core.warehouse.tables import Tables


def check_run(spark, tables: Tables, state: RunState) -> List[str]:
    """Return the violations of the invariant for a committed run (an empty list when it holds).

    Selected item = a row of the run's staged work set, or an invalid catalog row. It must be in
    exactly one of: `embeddings` with this model_version and its content_hash, or `embedding_errors`
    of this run. `embeddings` must hold one row per (item_id, model_version), `runs` one row per run.
    """
    from pyspark.sql import functions as F

    mv, run_id = state.manifest["model_version"], state.run_id
    emb = tables.read("embeddings").where(F.col(S.MODEL_VERSION) == mv)
    problems = _duplicates(emb.groupBy(S.ITEM_ID).count(), "embeddings rows for one (item_id, model_version)")
    errors = tables.read("embedding_errors").where(F.col(S.RUN_ID) == run_id)
    n_runs_rows = tables.read("runs").where(F.col(S.RUN_ID) == run_id).count()
    if n_runs_rows != 1:
        problems.append(f"run {run_id} has {n_runs_rows} rows in the runs table (expected 1)")
    if not state.shards():
        return problems
    selected = spark.read.parquet(storage.spark_path(state.path("input"))).select(S.ITEM_ID, S.CONTENT_HASH)
    embedded = selected.join(emb.select(S.ITEM_ID, S.CONTENT_HASH), [S.ITEM_ID, S.CONTENT_HASH], "left_semi")
    failed = selected.join(errors.select(S.ITEM_ID).distinct(), S.ITEM_ID, "left_semi")
    both = embedded.join(failed, S.ITEM_ID, "left_semi").count()
    neither = selected.join(embedded, S.ITEM_ID, "left_anti").join(failed, S.ITEM_ID, "left_anti")
    problems += _duplicates(
        errors.where(F.col("stage") != "catalog").groupBy(S.ITEM_ID).count(),
        "error rows for one item in this run",
    )
    if both:
        problems.append(f"{both} item(s) are both embedded and in the errors of run {run_id}")
    missing = [r[S.ITEM_ID] for r in neither.limit(10).collect()]
    if missing:
        problems.append(
            f"{neither.count()} selected item(s) are neither embedded nor in the errors: {missing}"
        )
    return problems


def _duplicates(counts, what: str) -> List[str]:
    dup = counts.where("count > 1")
    n = dup.count()
    return [f"{n} duplicated {what}: {[r[0] for r in dup.limit(10).collect()]}"] if n else []
