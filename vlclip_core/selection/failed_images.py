"""Images that failed for good (HTTP 404/410, missing file): recorded at commit, skipped at selection."""

from __future__ import annotations

from vlclip_core import schema as S

TABLE = "failed_images"


def recently_failed(tables, retry_after_hours: float):
    """image_uris that failed for good less than `retry_after_hours` ago (None when the memory is off)."""
    from pyspark.sql import functions as F

    if retry_after_hours <= 0:
        return None
    since = F.current_timestamp() - F.make_interval(secs=F.lit(float(retry_after_hours) * 3600.0))
    return tables.read(TABLE).where(F.col("last_failed_at") > since).select(S.IMAGE_URI)


def split_known_failures(work, tables, retry_after_hours: float):
    """(work without the items whose image recently failed for good, those items or None)."""
    known = recently_failed(tables, retry_after_hours)
    if known is None:
        return work, None
    # no broadcast hint: the table grows with the catalog; Spark broadcasts it only when it is small
    return work.join(known, S.IMAGE_URI, "left_anti"), work.join(known, S.IMAGE_URI, "left_semi")


def record_failures(tables, results, run_id: str, retention_days: float = 0.0) -> None:
    """Upsert this run's permanent fetch failures; forget images this run fetched after all.

    A run counts each failure once however often its commit is retried (a row this run already
    wrote keeps its count), and rows whose last failure is older than `retention_days` are deleted.
    """
    from pyspark.sql import functions as F

    failed = (
        results.where(
            (F.col(S.STATUS) == S.STATUS_ERROR)
            & (F.col(S.ERROR_STAGE) == "decode")
            & F.col(S.ERROR_TYPE).isin(*S.PERMANENT_FETCH_ERRORS)
        )
        .select(S.IMAGE_URI, S.ERROR_TYPE, S.ERROR_MESSAGE, F.lit(True).alias("_failed"))
        .dropDuplicates([S.IMAGE_URI])
    )
    fetched = (
        results.where(F.col(S.IMAGE_SHA).isNotNull())
        .select(S.IMAGE_URI)
        .distinct()
        .join(failed.select(S.IMAGE_URI), S.IMAGE_URI, "left_anti")
        .select(
            S.IMAGE_URI,
            F.lit(None).cast("string").alias(S.ERROR_TYPE),
            F.lit(None).cast("string").alias(S.ERROR_MESSAGE),
            F.lit(False).alias("_failed"),
        )
    )
    now, src_failed = F.current_timestamp(), F.col("s._failed")
    values = {
        "error_type": F.col(f"s.{S.ERROR_TYPE}"),
        "message": F.col(f"s.{S.ERROR_MESSAGE}"),
        "last_failed_at": now,
        "run_id": F.lit(run_id),
    }
    same_run = F.col("t.run_id") == F.lit(run_id)
    counted = F.when(same_run, F.col("t.failures")).otherwise(F.col("t.failures") + 1)
    table = tables.delta(TABLE)
    (
        table.alias("t")
        .merge(failed.unionByName(fetched).alias("s"), F.col(f"t.{S.IMAGE_URI}") == F.col(f"s.{S.IMAGE_URI}"))
        .whenMatchedDelete(condition=~src_failed)
        .whenMatchedUpdate(condition=src_failed, set=dict(values, failures=counted))
        .whenNotMatchedInsert(
            condition=src_failed,
            values=dict(values, image_uri=F.col(f"s.{S.IMAGE_URI}"), failures=F.lit(1), first_failed_at=now),
        )
        .execute()
    )
    if retention_days > 0:
        cutoff = now - F.make_interval(secs=F.lit(float(retention_days) * 86400.0))
        table.delete(F.col("last_failed_at") < cutoff)
