"""Benchmark catalogs: sample items (real JPEGs) cycled to any size, and synthetic rows without images."""

from __future__ import annotations

import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq

from vlclip_core import schema as S
from vlclip_core.tools.sample_catalog import catalog_schema, make_sample_catalog, read_catalog, write_catalog

log = logging.getLogger(__name__)

READY = "_READY"  # a leading underscore: Spark and pyarrow skip it when reading the catalog directory
PRODUCT_TYPES = (
    "running shoe",
    "handbag",
    "table lamp",
    "coffee mug",
    "t-shirt",
    "backpack",
    "wristwatch",
    "sunglasses",
)


def image_pool(data_dir: str, pool: int, seed: int = 0) -> pa.Table:
    """The first `pool` sample items (images drawn once, then reused by every catalog of this seed)."""
    root = os.path.join(data_dir, f"pool-{pool}-seed{seed}")
    catalog = os.path.join(root, "catalog")
    if not os.path.exists(os.path.join(root, READY)):
        log.info("drawing %d sample images into %s", pool, root)
        make_sample_catalog(root, n_items=pool, seed=seed)
        open(os.path.join(root, READY), "w", encoding="utf-8").close()
    return read_catalog(catalog)


def cycled_catalog(data_dir: str, n_items: int, pool: int, seed: int = 0) -> str:
    """A catalog of `n_items` rows: item i is pool item i % pool with its own id (and a title suffix
    from the second cycle on, so texts differ); smaller catalogs are the pool's first rows.
    Returns its directory.
    """
    path = os.path.join(data_dir, f"catalog-{n_items}-pool{pool}-seed{seed}")
    if os.path.exists(os.path.join(path, READY)):
        return os.path.abspath(path)
    base = image_pool(data_dir, pool, seed)
    rows = base.to_pylist()
    out = []
    for i in range(n_items):
        row = dict(rows[i % len(rows)])
        row[S.ITEM_ID] = f"SKU-{i:07d}"
        if i >= len(rows):
            row[S.TITLE] = f"{row[S.TITLE]} v{i // len(rows)}"
        out.append(row)
    write_catalog(pa.Table.from_pylist(out, schema=catalog_schema()), path)
    open(os.path.join(path, READY), "w", encoding="utf-8").close()
    return os.path.abspath(path)


def synthetic_catalog(data_dir: str, n_items: int) -> str:
    """`n_items` catalog rows whose image files do not exist (for runs that must never fetch an image)."""
    path = os.path.join(data_dir, f"synthetic-{n_items}")
    if os.path.exists(os.path.join(path, READY)):
        return os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    ids = [f"SYN-{i:08d}" for i in range(n_items)]
    types = [PRODUCT_TYPES[i % len(PRODUCT_TYPES)] for i in range(n_items)]
    table = pa.table(
        {
            S.ITEM_ID: ids,
            S.TITLE: [f"Brand{i % 97} {t} model {i}" for i, t in enumerate(types)],
            S.DESCRIPTION: [f"A {t} for everyday use, item {i}." for i, t in enumerate(types)],
            S.PRODUCT_TYPE: types,
            S.ATTRIBUTES: pa.array(
                [[("brand", f"Brand{i % 97}"), ("colour", "red")] for i in range(n_items)],
                type=pa.map_(pa.string(), pa.string()),
            ),
            S.IMAGE_URI: [f"/nonexistent/vlclip-bench/{i}.jpg" for i in ids],
        }
    )
    pq.write_table(table, os.path.join(path, "part-00000.parquet"), row_group_size=50_000)
    open(os.path.join(path, READY), "w", encoding="utf-8").close()
    return os.path.abspath(path)
