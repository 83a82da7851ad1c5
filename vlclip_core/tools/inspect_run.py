"""Pick a run's items with Spark and hand them to the contact-sheet renderer."""

from __future__ import annotations

from typing import Optional

from vlclip_core import schema as S
from vlclip_core.config import VlclipConfig
from vlclip_core.selection.catalog import normalise, read_catalog
from vlclip_core.warehouse.spark_session import get_spark
from vlclip_core.warehouse.tables import Tables


def latest_run_id(tables: Tables) -> str:
    rows = (
        tables.read("runs")
        .where("status = 'succeeded' AND items_embedded > 0")
        .orderBy("finished_at", ascending=False)
        .limit(1)
        .collect()
    )
    if not rows:
        raise LookupError("no succeeded run with embedded items in the runs table")
    return rows[0][S.RUN_ID]


def run_items(spark, config: VlclipConfig, run_id: Optional[str], limit: int) -> list:
    """Rows of the embeddings table written by `run_id`, joined with the catalog's original texts."""
    from pyspark.sql import functions as F

    tables = Tables(spark, config.warehouse)
    run_id = run_id or latest_run_id(tables)
    catalog = read_catalog(spark, config.catalog)
    extra = ["true_box"] if "true_box" in catalog.columns else []
    originals = (
        normalise(catalog).join(catalog.select(S.ITEM_ID, *extra), S.ITEM_ID) if extra else normalise(catalog)
    )
    emb = (
        tables.read("embeddings")
        .where(F.col(S.RUN_ID) == F.lit(run_id))
        .select(
            S.ITEM_ID, S.ENRICHED_TEXT, S.ENRICHMENT_STATUS, "grounding_box", "grounding_score", "grounded"
        )
    )
    rows = emb.join(originals.drop(S.ATTRIBUTES), S.ITEM_ID).orderBy(S.ITEM_ID).limit(limit).collect()
    return [row.asDict() for row in rows]


def write_contact_sheet(
    config: VlclipConfig, run_id: Optional[str], out_path: str, limit: int = 24, spark=None
) -> str:
    from vlclip_core.tools.inspect_sheet import render_contact_sheet

    spark = spark or get_spark(config.spark)
    return render_contact_sheet(run_items(spark, config, run_id, limit), out_path, config.images)
