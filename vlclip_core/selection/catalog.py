"""Read and validate the user's catalog with Spark; split invalid rows off; hash the model inputs."""

from __future__ import annotations

import logging
from typing import List, Optional

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import CatalogConfig

log = logging.getLogger(__name__)


class CatalogSchemaError(ValueError):
    """The catalog lacks required columns or has them with the wrong type (the message lists each)."""


def read_catalog(spark, cfg: CatalogConfig, version: Optional[int] = None):
    """Load the catalog (Delta table, Delta/Parquet directory or metastore table), filter pushed down;
    `version`: that Delta snapshot (catalog_version), so every read of one run sees the same rows."""
    reader = spark.read.option("versionAsOf", version) if version is not None else spark.read
    if cfg.table:
        df = reader.table(cfg.table) if version is not None else spark.table(cfg.table)
    else:
        fmt = _detect_format(cfg.path) if cfg.format == "auto" else cfg.format
        df = reader.format(fmt).load(storage.spark_path(cfg.path))
    if cfg.filter:
        df = df.where(cfg.filter)
    return df


def catalog_version(spark, cfg: CatalogConfig) -> Optional[int]:
    """The catalog's current Delta version (None for a Parquet catalog, which has no snapshots)."""
    from delta.tables import DeltaTable

    if cfg.table:
        try:
            table = DeltaTable.forName(spark, cfg.table)
        except Exception:  # noqa: BLE001 - a metastore table that is not Delta: no snapshot to pin
            return None
    elif (_detect_format(cfg.path) if cfg.format == "auto" else cfg.format) == "delta":
        table = DeltaTable.forPath(spark, storage.spark_path(cfg.path))
    else:
        return None
    return int(table.history(1).select("version").first()[0])


def _detect_format(path: str) -> str:
    if not storage.exists(path):
        raise FileNotFoundError(f"catalog path {path!r} does not exist")
    return "delta" if storage.exists(storage.join(path, "_delta_log")) else "parquet"


def validate_schema(df) -> None:
    """Fail before any model work, naming each missing or mistyped column."""
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    problems: List[str] = []
    for column, expected in S.REQUIRED_CATALOG_COLUMNS.items():
        if column not in types:
            problems.append(f"missing required column {column!r} ({expected})")
        elif types[column] != expected:
            problems.append(f"column {column!r} must be {expected}, found {types[column]}")
    for column, expected in S.OPTIONAL_CATALOG_COLUMNS.items():
        if column in types and types[column] != expected:
            problems.append(f"optional column {column!r} must be {expected}, found {types[column]}")
    if problems:
        raise CatalogSchemaError("catalog schema is invalid: " + "; ".join(problems))


def normalise(df):
    """Keep the model-input columns, adding absent optional ones as nulls."""
    from pyspark.sql import functions as F

    for column, dtype in S.OPTIONAL_CATALOG_COLUMNS.items():
        if column not in df.columns:
            df = df.withColumn(column, F.lit(None).cast(dtype))
    return df.select(*S.REQUIRED_CATALOG_COLUMNS, *S.OPTIONAL_CATALOG_COLUMNS)


def flag_invalid(df, dups=None):
    """Add `error_type` (null for a valid row) and `error_message` to the normalised catalog.

    Rule for duplicates: every row of a duplicated item_id is rejected (no silent winner), so the
    catalog owner sees the conflict; the id's earlier embedding, if any, is kept untouched.
    `dups` counts the catalog rows of the row's item_id: by default a window over `df`; a caller whose
    plan already partitions by item_id (workset.classify) passes its own.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if dups is None:
        dups = F.count(F.lit(1)).over(Window.partitionBy(S.ITEM_ID))
    reason = (
        F.when(F.col(S.ITEM_ID).isNull() | (F.trim(S.ITEM_ID) == ""), F.lit("null_item_id"))
        .when(dups > 1, F.lit("duplicate_item_id"))
        .when(F.col(S.IMAGE_URI).isNull() | (F.trim(S.IMAGE_URI) == ""), F.lit("missing_image_uri"))
    )
    message = (
        F.when(
            reason == "duplicate_item_id",
            F.concat(F.lit("item_id appears "), dups.cast("string"), F.lit(" times")),
        )
        .when(reason == "null_item_id", F.lit("item_id is null or blank"))
        .when(reason.isNotNull(), F.lit("image_uri is null or blank"))
    )
    # one projection (each DataFrame call is a JVM round trip and a new analysis of the whole plan)
    return df.withColumns({S.ERROR_TYPE: reason, S.ERROR_MESSAGE: message})


# content_hash: "x1:" + 32 hex digits, two chained xxhash64 of every model input (native Spark hashing,
# ~3x cheaper than serialising the row to JSON for SHA-256; it is the no-op nightly's main cost).
CONTENT_HASH_PREFIX = "x1:"
_FINGERPRINT_FIELDS = (S.TITLE, S.DESCRIPTION, S.PRODUCT_TYPE, S.IMAGE_URI, S.ATTRIBUTES)
_ENTRIES = "_attribute_entries"


def with_content_hash(df, model_version: str):
    """Add the x1 content hash of the raw catalog columns (attributes still a map).

    Spark's hash skips nulls, so the inputs are made unambiguous first: a bit mask of which fields are
    null, and the attribute values joined with a null marker (which key holds a null value). Map order
    does not matter: entries are sorted by key, in a projection of their own so the sort runs once per
    row, not once per use. 128 bits: the second hash starts from another seed.
    """
    from pyspark.sql import functions as F

    null_mask = sum(
        (F.col(c).isNull().cast("int") * (1 << i) for i, c in enumerate(_FINGERPRINT_FIELDS)), F.lit(0)
    )
    entries = F.col(_ENTRIES)
    values = F.array_join(entries.getField("value"), "\u0000", "\u0001")
    parts = [
        S.TITLE,
        S.DESCRIPTION,
        S.PRODUCT_TYPE,
        S.IMAGE_URI,
        entries,
        values,
        null_mask,
        F.lit(model_version),
    ]

    def hex64(h):
        return F.lpad(F.hex(h), 16, "0")

    fingerprint = F.concat(
        F.lit(CONTENT_HASH_PREFIX),
        hex64(F.xxhash64(*parts)),
        hex64(F.xxhash64(F.lit("vlclip-x1-second"), *parts)),
    )
    return (
        df.withColumn(_ENTRIES, F.sort_array(F.map_entries(S.ATTRIBUTES)))
        .withColumn(S.CONTENT_HASH, fingerprint)
        .drop(_ENTRIES)
    )


def _attributes_json():
    from pyspark.sql import functions as F

    # sort_array uses Spark's native ordering; array_sort's comparator is an interpreted lambda (~0.2 s
    # per 100k rows slower). Entries are never null and keys are unique, so the order is by key.
    attrs = F.to_json(F.map_from_entries(F.sort_array(F.map_entries(S.ATTRIBUTES))))
    return F.when(F.col(S.ATTRIBUTES).isNotNull(), attrs)


def with_text_hashes(df, llm_identity: str):
    """Add attributes_json and text_hash (the LLM inputs + LLM identity), drop the attributes map."""
    from pyspark.sql import functions as F

    df = df.withColumn(S.ATTRIBUTES_JSON, _attributes_json())
    text_fields = F.to_json(F.struct(S.TITLE, S.DESCRIPTION, S.PRODUCT_TYPE, S.ATTRIBUTES_JSON))
    return df.withColumn(S.TEXT_HASH, F.sha2(F.concat(text_fields, F.lit(llm_identity)), 256)).drop(
        S.ATTRIBUTES
    )


def load_hashed(spark, cfg: CatalogConfig, model_version: str, version: Optional[int] = None):
    """Read, validate and normalise the catalog and add its content_hash (rows not yet flagged)."""
    df = read_catalog(spark, cfg, version)
    validate_schema(df)
    return with_content_hash(normalise(df), model_version)
