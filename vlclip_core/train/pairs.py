"""Spark side of training: one model_version's embeddings rows (at one Delta version) joined with the
catalog become image/text pairs with a deterministic held-out split, written once as Parquet."""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional

import numpy as np
from PIL import Image

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import ConfigError, ImageConfig, VlclipConfig, digest
from vlclip_core.errors import ItemError
from vlclip_core.images.codec import decode_image
from vlclip_core.images.fetch import fetch_bytes
from vlclip_core.llm.agent import clean_attributes, clean_text, fallback_text
from vlclip_core.selection.catalog import normalise, read_catalog
from vlclip_core.stages.grounding import crop_image
from vlclip_core.train.config import DataConfig, TrainJobConfig
from vlclip_core.warehouse.tables import Tables, table_version

log = logging.getLogger(__name__)

SPLIT = "split"
TEXT = "text"
IMAGE_PNG = "image_png"
ERROR = "error"
TRAIN, EVAL = "train", "eval"
MANIFEST = "manifest.json"
PAIR_COLUMNS = (
    f"{S.ITEM_ID} string, {S.PRODUCT_TYPE} string, {SPLIT} string, {TEXT} string, "
    f"{IMAGE_PNG} binary, {S.GROUNDED} boolean, {ERROR} string"
)


@dataclass
class PairsDataset:
    """A written pairs dataset: where it is, what it was made from, and its row counts."""

    dataset_id: str
    path: str  # Parquet directory of PAIR_COLUMNS
    data_table: str
    data_version: int
    data_model_version: str
    ablation: str
    counts: Dict[str, int] = field(default_factory=dict)  # train / eval / failed


def prepare_pairs(spark, cfg: TrainJobConfig, embed: VlclipConfig) -> PairsDataset:
    """The pairs of the embeddings table's current version; reused when that dataset was written before."""
    tables = Tables(spark, embed.warehouse)
    version = table_version(tables, "embeddings")
    model_version = cfg.data.model_version or newest_model_version(tables)
    identity = {
        "table": tables.ref("embeddings"),
        "version": version,
        "model_version": model_version,
        "catalog": [embed.catalog.path, embed.catalog.table, embed.catalog.filter],
        "data": asdict(cfg.data) | {"model_version": model_version},
        "llm_max_chars": embed.models.llm.max_chars,
    }
    dataset_id = digest(identity)[:16]
    root = storage.join(cfg.train.output_dir, "datasets", dataset_id)
    if storage.exists(storage.join(root, MANIFEST)):
        log.info("pairs dataset %s already written at %s", dataset_id, root)
        return PairsDataset(**storage.read_json(storage.join(root, MANIFEST)))
    dataset = PairsDataset(
        dataset_id,
        storage.join(root, "pairs"),
        tables.ref("embeddings"),
        version,
        model_version,
        cfg.data.ablation,
    )
    write_pairs(
        source_rows(spark, tables, embed, version, model_version, cfg.data), embed, cfg.data, dataset.path
    )
    dataset.counts = pair_counts(spark, dataset.path)
    _check_counts(dataset, cfg.data)
    storage.write_json(storage.join(root, MANIFEST), asdict(dataset))
    log.info(
        "pairs dataset %s: %s (embeddings version %d, %s)", dataset_id, dataset.counts, version, model_version
    )
    return dataset


def newest_model_version(tables: Tables) -> str:
    """The model_version of the newest succeeded embedding run."""
    from pyspark.sql import functions as F

    row = (
        tables.read("runs")
        .where(F.col("status") == F.lit("succeeded"))
        .orderBy(F.col("finished_at").desc())
        .select(S.MODEL_VERSION)
        .first()
    )
    if row is None:
        raise ConfigError(
            "data.model_version is unset and the runs table has no succeeded run to take it from"
        )
    return row[S.MODEL_VERSION]


def source_rows(
    spark, tables: Tables, embed: VlclipConfig, version: int, model_version: str, data: DataConfig
):
    """Embeddings rows of `model_version` at `version`, with the catalog's image_uri, texts and split."""
    from pyspark.sql import functions as F

    emb = (
        spark.sql(f"SELECT * FROM {tables.ref('embeddings')} VERSION AS OF {int(version)}")
        .where(F.col(S.MODEL_VERSION) == F.lit(model_version))
        .select(S.ITEM_ID, S.PRODUCT_TYPE, S.ENRICHED_TEXT, S.GROUNDING_BOX, S.GROUNDED)
    )
    catalog = normalise(read_catalog(spark, embed.catalog)).drop(S.PRODUCT_TYPE)
    unique_ids = catalog.groupBy(S.ITEM_ID).count().where(F.col("count") == 1).select(S.ITEM_ID)
    bucket = F.pmod(F.xxhash64(F.concat(F.lit(data.split_salt), F.col(S.ITEM_ID))), F.lit(100))
    return emb.join(catalog.join(unique_ids, S.ITEM_ID, "left_semi"), S.ITEM_ID).withColumn(
        SPLIT, F.when(bucket < data.eval_pct, F.lit(EVAL)).otherwise(F.lit(TRAIN))
    )


def write_pairs(rows, embed: VlclipConfig, data: DataConfig, path: str) -> None:
    """Fetch, crop and encode every row's image on the executors (mapInPandas) and write the Parquet."""
    images, max_chars = embed.images, embed.models.llm.max_chars

    def to_pairs(frames):
        for frame in frames:
            yield pairs_frame(frame, images, data, max_chars)

    rows.mapInPandas(to_pairs, PAIR_COLUMNS).write.mode("overwrite").parquet(storage.spark_path(path))


def pairs_frame(frame, images: ImageConfig, data: DataConfig, max_chars: int):
    """One pandas batch of source rows -> the same rows as pairs (a bad item becomes a row with `error`)."""
    import pandas as pd

    out = [pair_row(row, images, data, max_chars) for row in frame.to_dict("records")]
    columns = [S.ITEM_ID, S.PRODUCT_TYPE, SPLIT, TEXT, IMAGE_PNG, S.GROUNDED, ERROR]
    return pd.DataFrame(out, columns=columns)


def pair_row(row: dict, images: ImageConfig, data: DataConfig, max_chars: int) -> dict:
    base = {
        S.ITEM_ID: row[S.ITEM_ID],
        S.PRODUCT_TYPE: row[S.PRODUCT_TYPE],
        SPLIT: row[SPLIT],
        S.GROUNDED: bool(row[S.GROUNDED]) and data.grounded,
        TEXT: None,
        IMAGE_PNG: None,
        ERROR: None,
    }
    try:
        base[TEXT] = pair_text(row, data, max_chars)
        base[IMAGE_PNG] = encode_png(pair_image(row, images, data))
    except ItemError as err:
        base[ERROR] = f"{err.error_type}: {err.message}"
    return base


def pair_text(row: dict, data: DataConfig, max_chars: int) -> str:
    """The enriched text, or under no_enrichment the cleaned catalog text (the enrichment fallback)."""
    if data.enriched:
        text = clean_text(row[S.ENRICHED_TEXT])
    else:
        fields = {
            "title": clean_text(row[S.TITLE]),
            "description": clean_text(row[S.DESCRIPTION]),
            "product_type": clean_text(row[S.PRODUCT_TYPE]),
        }
        text = fallback_text(fields, clean_attributes(_mapping(row.get(S.ATTRIBUTES))), max_chars)
    if not text:
        raise ItemError("empty_text", "no text for the pair")
    return text


def _mapping(value) -> dict:
    """A map cell as a dict (Arrow hands maps over as lists of key/value pairs)."""
    if value is None:
        return {}
    return dict(value) if not isinstance(value, dict) else value


def pair_image(row: dict, images: ImageConfig, data: DataConfig) -> np.ndarray:
    """The decoded image, cropped at grounding_box (+ margin) unless no_grounding, at most data.max_side."""
    rgb = decode_image(fetch_bytes(str(row[S.IMAGE_URI]), images), images)
    box = row[S.GROUNDING_BOX]
    if data.grounded and box is not None and len(box) == 4:
        rgb = crop_image(rgb, [float(v) for v in box], data.crop_margin)
    return downscale(rgb, data.max_side)


def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))


def encode_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes, max_side: int = 4096) -> np.ndarray:
    """A stored pair image as (h, w, 3) uint8, through the project's safe decoder."""
    return decode_image(data, ImageConfig(max_side=max_side))


def pair_counts(spark, path: str) -> Dict[str, int]:
    from pyspark.sql import functions as F

    rows = (
        spark.read.parquet(storage.spark_path(path))
        .select(F.when(F.col(ERROR).isNotNull(), F.lit("failed")).otherwise(F.col(SPLIT)).alias("kind"))
        .groupBy("kind")
        .count()
        .collect()
    )
    counts = {TRAIN: 0, EVAL: 0, "failed": 0}
    counts.update({r["kind"]: int(r["count"]) for r in rows})
    return counts


def _check_counts(dataset: PairsDataset, data: DataConfig) -> None:
    if dataset.counts[TRAIN] < data.min_train_items or dataset.counts[EVAL] < 2:
        raise ConfigError(
            f"too few pairs in {dataset.data_table} for model_version {dataset.data_model_version}: "
            f"{dataset.counts} (data.min_train_items={data.min_train_items}, eval needs 2)"
        )


def read_pairs(path: str, split: Optional[str]):
    """The good pairs of `split` (all splits when None) as a pyarrow Table sorted by item_id."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    fs, root = storage.resolve(path)
    table = pads.dataset(root, filesystem=fs, format="parquet").to_table()
    keep = pc.is_null(table[ERROR])
    if split:
        keep = pc.and_(keep, pc.equal(table[SPLIT], split))
    return table.filter(keep).sort_by(S.ITEM_ID)
