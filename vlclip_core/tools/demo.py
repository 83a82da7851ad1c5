"""The embedded default: sample catalog + tiny offline models + one job run + a Spark SQL query on it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from vlclip_core.config import VlclipConfig, load_config
from vlclip_core.logs import setup_logging

HONESTY = """\
NOTE: the tiny profile's models have seeded RANDOM weights (nothing could be downloaded here), so its
embeddings, boxes and rewritten texts carry no meaning: the run shows the pipeline, not the model.
For real embeddings use conf/prod.yaml (Grounding DINO, an LLM endpoint, open_clip ViT-L-14 or your
fine-tuned VL-CLIP checkpoint) on machines that can load those weights:
    spark-submit ... jobs/embed_catalog.py --config conf/prod.yaml"""


def nearest_items_sql(ref: str, model_version: str, item_id: str, k: int = 5) -> str:
    """Spark SQL: the k items whose fused embedding has the highest cosine similarity to `item_id`'s."""
    return f"""
WITH q AS (SELECT embedding FROM {ref} WHERE model_version = '{model_version}' AND item_id = '{item_id}')
SELECT e.item_id, e.product_type,
       aggregate(zip_with(e.embedding, q.embedding, (x, y) -> x * y), 0D, (acc, v) -> acc + v) AS cosine,
       substr(e.enriched_text, 1, 60) AS enriched_text
FROM {ref} e CROSS JOIN q
WHERE e.model_version = '{model_version}' AND e.item_id <> '{item_id}'
ORDER BY cosine DESC LIMIT {k}"""


def prepare_inputs(config: VlclipConfig, items: int) -> None:
    from vlclip_core.run.preflight import build_missing_tiny_models
    from vlclip_core.tools.sample_catalog import make_sample_catalog

    build_missing_tiny_models(config)
    if not os.path.exists(config.catalog.path):
        sample_root = os.path.dirname(config.catalog.path.rstrip("/"))
        made = make_sample_catalog(sample_root, n_items=items)
        if os.path.abspath(made) != os.path.abspath(config.catalog.path):
            raise RuntimeError(f"sample catalog went to {made}, but the profile reads {config.catalog.path}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="vlclip-demo")
    parser.add_argument("--config", default="conf/tiny.yaml")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    setup_logging("INFO")
    from vlclip_core.run.job import run_job
    from vlclip_core.run.summary import format_summary
    from vlclip_core.tools.inspect_run import write_contact_sheet

    config = load_config(args.config, tuple(args.overrides))
    prepare_inputs(config, args.items)
    report = run_job(config)
    print("\n" + format_summary(report) + "\n")
    spark = _spark()
    emb = spark.sql(
        f"SELECT item_id FROM {report.tables['embeddings']} WHERE model_version = "
        f"'{report.model_version}' ORDER BY item_id LIMIT 1"
    ).collect()
    if emb:
        query = nearest_items_sql(report.tables["embeddings"], report.model_version, emb[0]["item_id"])
        print(f"Five nearest items to {emb[0]['item_id']} (Spark SQL):{query}\n")
        spark.sql(query).show(truncate=False)
    print("contact sheet:", write_contact_sheet(config, None, "build/contact_sheet.html", spark=spark))
    print(HONESTY)
    return 0


def _spark():
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


if __name__ == "__main__":
    sys.exit(main())
