"""The job's Delta tables: create them, and MERGE staged results into them (rerun-safe writes)."""
from __future__ import annotations

import logging
from typing import Dict, Optional

from vlclip_core import schema as S
from vlclip_core import storage
from vlclip_core.config import WarehouseConfig

log = logging.getLogger(__name__)

# Set on embeddings tables this release creates: every row is written with the x1 content hash, so
# the selection needs no first-release (SHA-256) comparison unless it meets such rows (workset.stage_work).
HASH_SCHEME_PROPERTY = "vlclip.contentHashScheme"

# Narrow embeddings table: partitioned by model_version so a MERGE prunes to one recipe, deletion
# vectors so an update marks rows instead of rewriting whole files, and item_id statistics first.
TABLE_PROPERTIES = {
    "embeddings": {"delta.enableDeletionVectors": "true", "delta.dataSkippingNumIndexedCols": "2",
                   HASH_SCHEME_PROPERTY: "x1"},
    "grounding_cache": {"delta.enableDeletionVectors": "true"},
    "enrichment_cache": {"delta.enableDeletionVectors": "true"},
}
PARTITION_COLUMNS = {"embeddings": ["model_version"], "embedding_errors": [], "runs": [],
                     "grounding_cache": ["detector_id"], "enrichment_cache": []}


_SCHEMAS: Dict[str, object] = {}


def table_schema(spark, table: str):
    """The StructType of a table's DDL, parsed once per process (each parse is a JVM round trip)."""
    if table not in _SCHEMAS:
        _SCHEMAS[table] = spark.createDataFrame([], S.TABLES[table]).schema
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
            return F.create_map(*[c for k, v in value.items() for c in (F.lit(k).cast(data_type.keyType),
                                                                        F.lit(v).cast(data_type.valueType))])
        return F.lit(value)

    columns = [literal(values.get(f.name), f.dataType).cast(f.dataType).alias(f.name) for f in schema.fields]
    return spark.range(0, 1, 1, 1).select(*columns)


class Tables:
    """Locations of the warehouse tables: a metastore name when configured, else <warehouse>/<name>."""

    def __init__(self, spark, cfg: WarehouseConfig):
        self.spark = spark
        self.cfg = cfg
        self.names: Dict[str, Optional[str]] = {
            "embeddings": cfg.embeddings_table, "embedding_errors": cfg.errors_table, "runs": cfg.runs_table}

    def location(self, table: str) -> str:
        return storage.spark_path(storage.join(self.cfg.path, table))

    def ref(self, table: str) -> str:
        """SQL reference of a table: its metastore name or delta.`path`."""
        name = self.names.get(table)
        return name if name else f"delta.`{self.location(table)}`"

    def ensure_all(self) -> None:
        for table in S.TABLES:
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

    def ensure(self, table: str) -> None:
        from delta.tables import DeltaTable

        if not self.names.get(table) and storage.exists(storage.join(self.location(table), "_delta_log")):
            return  # already there: no Spark round trip

        builder = DeltaTable.createIfNotExists(self.spark)
        name = self.names.get(table)
        builder = builder.tableName(name) if name else builder.location(self.location(table))
        builder = builder.addColumns(table_schema(self.spark, table))
        if PARTITION_COLUMNS[table]:
            builder = builder.partitionedBy(*PARTITION_COLUMNS[table])
        for key, value in TABLE_PROPERTIES.get(table, {}).items():
            builder = builder.property(key, value)
        builder.execute()

    def read(self, table: str):
        name = self.names.get(table)
        if name:
            return self.spark.table(name)
        return self.spark.read.format("delta").load(self.location(table))

    def delta(self, table: str):
        from delta.tables import DeltaTable

        name = self.names.get(table)
        if name:
            return DeltaTable.forName(self.spark, name)
        return DeltaTable.forPath(self.spark, self.location(table))


def merge_embeddings(tables: Tables, src, model_version: str, update_unchanged: bool) -> None:
    """Upsert by (item_id, model_version): update when the content hash changed, insert when new."""
    condition = f"t.model_version = '{model_version}' AND t.item_id = s.item_id AND t.model_version = s.model_version"
    update_when = None if update_unchanged else "t.content_hash <> s.content_hash"
    (tables.delta("embeddings").alias("t").merge(src.alias("s"), condition)
     .whenMatchedUpdateAll(condition=update_when)
     .whenNotMatchedInsertAll()
     .execute())


def replace_run_errors(tables: Tables, errors, run_id: str) -> None:
    """Write this run's error rows, replacing any earlier attempt of the same run (idempotent)."""
    _save(tables, "embedding_errors",
          errors.write.format("delta").mode("overwrite").option("replaceWhere", f"run_id = '{run_id}'"))


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
    (tables.delta("runs").alias("t").merge(row_df.alias("s"), "t.run_id = s.run_id")
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())


def insert_new(tables: Tables, table: str, src, keys: tuple) -> None:
    """Insert rows whose key is not in `table` yet (cache tables are insert-only)."""
    condition = " AND ".join(f"t.{k} <=> s.{k}" for k in keys)
    tables.delta(table).alias("t").merge(src.alias("s"), condition).whenNotMatchedInsertAll().execute()


def delete_removed_items(tables: Tables, catalog_ids, model_version: str) -> int:
    """Delete embeddings of this model_version whose item_id left the catalog; returns how many."""
    emb = tables.read("embeddings").where(f"model_version = '{model_version}'").select(S.ITEM_ID)
    gone = emb.join(catalog_ids, S.ITEM_ID, "left_anti")
    count = gone.count()
    if count:
        (tables.delta("embeddings").alias("t")
         .merge(gone.alias("s"), f"t.model_version = '{model_version}' AND t.item_id = s.item_id")
         .whenMatchedDelete().execute())
    return count
