"""The job's Delta tables: create them, and MERGE staged results into them (rerun-safe writes)."""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import WarehouseConfig

log = logging.getLogger(__name__)

# Narrow embeddings table: partitioned by model_version so a MERGE prunes to one recipe, deletion
# vectors so an update marks rows instead of rewriting whole files, and item_id statistics first.
TABLE_PROPERTIES = {
    "embeddings": {"delta.dataSkippingNumIndexedCols": "2"},
}
# Features chosen in config (warehouse.deletion_vectors / change_data_feed), kept in step on existing tables.
DELETION_VECTORS = "delta.enableDeletionVectors"
CHANGE_DATA_FEED = "delta.enableChangeDataFeed"
DELETION_VECTOR_TABLES = ("embeddings", "grounding_cache", "enrichment_cache")
CHANGE_DATA_FEED_TABLES = ("embeddings",)
PARTITION_COLUMNS = {
    "embeddings": ["model_version"],
    "embedding_errors": [],
    "runs": [],
    "grounding_cache": ["detector_id"],
    "enrichment_cache": [],
    "failed_images": [],
}


_SCHEMAS: Dict[str, object] = {}


def table_schema(spark, table: str):
    """The StructType of a table's DDL, parsed once per process (each parse is a JVM round trip)."""
    if table not in _SCHEMAS:
        _SCHEMAS[table] = spark.createDataFrame([], S.TABLES.get(table) or S.TRAINING_TABLES[table]).schema
    return _SCHEMAS[table]


def literal_row(spark, schema, values: dict):
    """A one-row DataFrame of typed literals in `schema`'s column order (missing keys are null).

    Built in the JVM: createDataFrame of Python rows parallelises pickled rows, whose one-row write
    then starts a Python worker to unpickle them (measured on the no-op run: the runs row's write).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import MapType

    def literal(value, data_type):
        if isinstance(data_type, MapType) and value is not None:
            return F.create_map(
                *[
                    c
                    for k, v in value.items()
                    for c in (F.lit(k).cast(data_type.keyType), F.lit(v).cast(data_type.valueType))
                ]
            )
        return F.lit(value)

    columns = [literal(values.get(f.name), f.dataType).cast(f.dataType).alias(f.name) for f in schema.fields]
    return spark.range(0, 1, 1, 1).select(*columns)


class Tables:
    """Locations of the warehouse tables: a metastore name when configured, else <warehouse>/<name>."""

    def __init__(self, spark, cfg: WarehouseConfig):
        self.spark = spark
        self.cfg = cfg
        self.names: Dict[str, Optional[str]] = {
            "embeddings": cfg.embeddings_table,
            "embedding_errors": cfg.errors_table,
            "runs": cfg.runs_table,
        }

    def location(self, table: str) -> str:
        return storage.spark_path(storage.join(self.cfg.path, table))

    def ref(self, table: str) -> str:
        """SQL reference of a table: its metastore name or delta.`path`."""
        name = self.names.get(table)
        return name if name else f"delta.`{self.location(table)}`"

    def ensure_all(self) -> None:
        """Create or align every table, all at once: each is its own Delta log (creating the seven of a
        new warehouse one after another was a fixed cost of every first run)."""
        run_concurrently([functools.partial(self._ensure_current, table) for table in S.TABLES])

    def _ensure_current(self, table: str) -> None:
        self.ensure(table)
        self.add_missing_columns(table)

    def add_missing_columns(self, table: str) -> None:
        """Bring a table made by an older vlclip up to the declared schema (new columns only)."""
        declared = table_schema(self.spark, table)
        present = set(self.read(table).columns)
        missing = [f for f in declared.fields if f.name not in present]
        if missing:
            columns = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in missing)
            log.info("adding column(s) %s to %s", columns, self.ref(table))
            self.spark.sql(f"ALTER TABLE {self.ref(table)} ADD COLUMNS ({columns})")

    def properties(self, table: str) -> Dict[str, str]:
        """The table's properties, Delta protocol features included (SHOW TBLPROPERTIES: from the log's
        metadata, no Spark job; DESCRIBE DETAIL runs one and took ~2x as long)."""
        return {r[0]: r[1] for r in self.spark.sql(f"SHOW TBLPROPERTIES {self.ref(table)}").collect()}

    def feature_properties(self, table: str) -> Dict[str, str]:
        """The config-chosen Delta features of `table` as table properties."""
        props = {}
        if table in DELETION_VECTOR_TABLES:
            props[DELETION_VECTORS] = str(self.cfg.deletion_vectors).lower()
        if table in CHANGE_DATA_FEED_TABLES:
            props[CHANGE_DATA_FEED] = str(self.cfg.change_data_feed).lower()
        return props

    def align_features(self, table: str) -> None:
        """Bring an existing table's deletion vectors and change data feed in line with config.

        Turning deletion vectors off drops the table feature (DROP FEATURE purges the deletion-vector
        files, then downgrades the protocol): only then can readers without deletion-vector support
        (delta-rs to_pyarrow_table, Ray read_delta) read the table. A property change alone would not do.
        """
        wanted = self.feature_properties(table)
        if not wanted:
            return
        current = self.properties(table)
        if wanted.get(DELETION_VECTORS) == "false" and "delta.feature.deletionVectors" in current:
            log.info(
                "dropping the deletion vectors feature of %s (warehouse.deletion_vectors=false)",
                self.ref(table),
            )
            self.spark.sql(f"ALTER TABLE {self.ref(table)} DROP FEATURE deletionVectors")
            current[DELETION_VECTORS] = "false"
        changed = {k: v for k, v in wanted.items() if current.get(k, "false") != v}
        if changed:
            settings = ", ".join(f"{k} = {v}" for k, v in changed.items())
            log.info("setting %s on %s", settings, self.ref(table))
            self.spark.sql(f"ALTER TABLE {self.ref(table)} SET TBLPROPERTIES ({settings})")

    def ensure(self, table: str) -> None:
        from delta.tables import DeltaTable

        if not self.names.get(table) and storage.exists(storage.join(self.location(table), "_delta_log")):
            self.align_features(table)  # already there: no create round trip
            return

        builder = DeltaTable.createIfNotExists(self.spark)
        name = self.names.get(table)
        builder = builder.tableName(name) if name else builder.location(self.location(table))
        builder = builder.addColumns(table_schema(self.spark, table))
        if PARTITION_COLUMNS.get(table):
            builder = builder.partitionedBy(*PARTITION_COLUMNS[table])
        for key, value in {**TABLE_PROPERTIES.get(table, {}), **self.feature_properties(table)}.items():
            builder = builder.property(key, value)
        builder.execute()
        if name:
            self.align_features(table)  # createIfNotExists keeps an existing table's properties

    def read(self, table: str, options: Optional[Dict[str, str]] = None):
        """The table as a DataFrame; Delta reader `options` select a version or the change data feed."""
        name = self.names.get(table)
        if name and not options:
            return self.spark.table(name)
        reader = self.spark.read.format("delta").options(**(options or {}))
        return reader.table(name) if name else reader.load(self.location(table))

    def delta(self, table: str):
        from delta.tables import DeltaTable

        name = self.names.get(table)
        if name:
            return DeltaTable.forName(self.spark, name)
        return DeltaTable.forPath(self.spark, self.location(table))


class DuplicateKeyError(RuntimeError):
    """A MERGE source holds one key more than once (Delta would insert it twice or fail the MERGE)."""


def check_unique_keys(src, keys: tuple, what: str) -> None:
    """Refuse a MERGE source in which a key repeats, naming a few of the repeated keys."""
    repeated = src.groupBy(*keys).count().where("count > 1").limit(5).collect()
    if repeated:
        shown = ", ".join(str(tuple(r[k] for k in keys)) for r in repeated)
        raise DuplicateKeyError(
            f"{what}: the source repeats key(s) {keys}: {shown}; nothing was merged"
        )


def merge_embeddings(tables: Tables, src, model_version: str, update_unchanged: bool) -> None:
    """Upsert by (item_id, model_version): update when the content hash changed or the stored row
    needs a rerun (its text fell back because the LLM failed), insert when new.

    A row is never updated by a run that started before the run that wrote it (run_started_at), so a
    stale run cannot revert newer content. A source with a repeated item_id is refused
    (DuplicateKeyError) before anything is written.
    """
    from pyspark.sql import functions as F

    check_unique_keys(src, (S.ITEM_ID,), f"MERGE into {tables.ref('embeddings')}")
    # rows written outside a run (benchmarks, backfills by hand): written now, final
    defaults = {S.RUN_STARTED_AT: F.current_timestamp(), S.NEEDS_RERUN: F.lit(False)}
    src = src.withColumns({k: v for k, v in defaults.items() if k not in src.columns})
    condition = _in_version("t", model_version) & _same(S.ITEM_ID, S.MODEL_VERSION)
    changed = (F.col(f"t.{S.CONTENT_HASH}") != F.col(f"s.{S.CONTENT_HASH}")) | F.coalesce(
        F.col(f"t.{S.NEEDS_RERUN}"), F.lit(False)
    )
    not_newer = F.col(f"t.{S.RUN_STARTED_AT}").isNull() | (
        F.col(f"t.{S.RUN_STARTED_AT}") <= F.col(f"s.{S.RUN_STARTED_AT}")
    )
    update_when = not_newer if update_unchanged else not_newer & changed
    (
        tables.delta("embeddings")
        .alias("t")
        .merge(src.alias("s"), condition)
        .whenMatchedUpdateAll(condition=update_when)
        .whenNotMatchedInsertAll()
        .execute()
    )


def _in_version(alias: str, model_version: str):
    """`<alias>.model_version = <literal>`: a literal, so the MERGE prunes to the version's partition."""
    from pyspark.sql import functions as F

    return F.col(f"{alias}.{S.MODEL_VERSION}") == F.lit(model_version)


def _same(*keys: str, null_safe: bool = False):
    """t.k = s.k for every key (`<=>` when null_safe), as one Column."""
    from pyspark.sql import functions as F

    pairs = [(F.col(f"t.{k}"), F.col(f"s.{k}")) for k in keys]
    terms = [t.eqNullSafe(s) if null_safe else t == s for t, s in pairs]
    return functools.reduce(lambda a, b: a & b, terms)


def append_errors(tables: Tables, errors) -> None:
    """Append error rows. A run writes them once per commit group through an idempotent session
    (spark_session.idempotent_session), so a repeated group appends nothing."""
    _save(tables, "embedding_errors", errors.write.format("delta").mode("append"))


def _save(tables: Tables, table: str, writer) -> None:
    name = tables.names.get(table)
    if name:
        writer.saveAsTable(name)
    else:
        writer.save(tables.location(table))


def write_run(tables: Tables, row_df, may_exist: bool) -> None:
    """Write a run's row: appended when the run never wrote one (a one-file commit, no join), else MERGEd
    by run_id so a resumed or failed-then-resumed run keeps one row."""
    if not may_exist:
        _save(tables, "runs", row_df.write.format("delta").mode("append"))
        return
    upsert(tables, "runs", row_df, ("run_id",))


def upsert(tables: Tables, table: str, src, keys: tuple) -> None:
    """MERGE `src` into `table` by `keys`: matched rows are updated, new ones inserted."""
    (
        tables.delta(table)
        .alias("t")
        .merge(src.alias("s"), _same(*keys))
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


def insert_new(tables: Tables, table: str, src, keys: tuple) -> None:
    """Insert rows whose key is not in `table` yet (cache tables are insert-only)."""
    tables.delta(table).alias("t").merge(
        src.alias("s"), _same(*keys, null_safe=True)
    ).whenNotMatchedInsertAll().execute()


def table_version(tables: Tables, table: str) -> int:
    """The latest commit version of `table`."""
    return int(tables.delta(table).history(1).select("version").first()[0])


def removed_items(tables: Tables, catalog_ids, model_version: str):
    """This model_version's embedded item_ids that are in no catalog row (valid or invalid)."""
    from pyspark.sql import functions as F

    emb = tables.read("embeddings").where(F.col(S.MODEL_VERSION) == F.lit(model_version)).select(S.ITEM_ID)
    return emb.join(catalog_ids.select(S.ITEM_ID), S.ITEM_ID, "left_anti")


def delete_removed_items(tables: Tables, catalog_ids, model_version: str) -> int:
    """Delete this model_version's embeddings whose item_id is in no catalog row; returns how many.

    One MERGE of the catalog's distinct ids with a not-matched-by-source delete scoped to the version:
    an item whose catalog row is duplicated or invalid is still in the catalog, so its embedding stays.
    """
    from pyspark.sql import functions as F

    ids = catalog_ids.select(S.ITEM_ID).where(F.col(S.ITEM_ID).isNotNull()).distinct()
    metrics = (
        tables.delta("embeddings")
        .alias("t")
        .merge(ids.alias("s"), _in_version("t", model_version) & _same(S.ITEM_ID))
        .whenNotMatchedBySourceDelete(condition=_in_version("t", model_version))
        .execute()
    )
    return int(metrics.first()["num_deleted_rows"])


def run_concurrently(writes: List[Callable[[], None]]) -> None:
    """Run independent table operations at once, then raise the first error, if any, once all have ended.

    Each write is its own Delta commit on its own table (rerun-safe on its own), and most of a small
    MERGE is driver-side latency (planning, reading the log, committing) that overlaps well.
    """
    if len(writes) <= 1:
        for write in writes:
            _timed(write)
        return
    with ThreadPoolExecutor(max_workers=len(writes), thread_name_prefix="vlclip-tables") as pool:
        futures = [pool.submit(_timed, write) for write in writes]
    failures = [f.exception() for f in futures if f.exception() is not None]
    for extra in failures[1:]:
        log.error("another table operation failed too: %s", extra)
    if failures:
        raise failures[0]


def _timed(operation: Callable[[], None]) -> None:
    """Run one table operation and log its seconds, named by its function and table where it has them."""
    func = getattr(operation, "func", operation)
    args = getattr(operation, "args", ())
    table = next((a for a in args[:2] if isinstance(a, str)), "")
    start = time.perf_counter()
    operation()
    log.info("table operation %s%s took %.1fs", getattr(func, "__name__", "?"), f" {table}" if table else "",
             time.perf_counter() - start)
