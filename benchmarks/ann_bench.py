"""ANN index comparison: recall@10, build time and queries/s of HNSW vs exact inner-product search."""

from __future__ import annotations

import logging
import time
from typing import List

import numpy as np

from benchmarks.context import BenchContext
from benchmarks.report import headline
from vlclip_core.config import IndexConfig
from vlclip_core.index.ann import HnswParams, ItemIndex, exact_neighbours

log = logging.getLogger(__name__)

K = 10
EXACT_CHUNK = 256


def unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def recall_at_k(found: List[List[str]], truth: np.ndarray, ids: List[str]) -> float:
    """Mean share of each query's exact top-k that the index returned."""
    hits = [len(set(row) & {ids[j] for j in exact}) for row, exact in zip(found, truth)]
    return float(np.mean(hits)) / truth.shape[1]


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.concatenate(
        [
            exact_neighbours(vectors, queries[i : i + EXACT_CHUNK], k)
            for i in range(0, len(queries), EXACT_CHUNK)
        ]
    )


def one_size(n: int, dim: int, n_queries: int, ef_values: tuple, seed: int) -> dict:
    """Build an index of n random unit vectors, then query it at each efSearch; exact search is the truth."""
    rng = np.random.default_rng(seed)
    vectors, queries = unit_vectors(n, dim, rng), unit_vectors(n_queries, dim, rng)
    ids = [f"item-{i:07d}" for i in range(n)]
    defaults = IndexConfig()
    index = ItemIndex(dim, HnswParams(defaults.hnsw_m, defaults.ef_construction, defaults.ef_search))
    start = time.perf_counter()
    index.upsert(ids, vectors)
    build_s = time.perf_counter() - start
    log.info("ann n=%d dim=%d: HNSW built in %.1fs", n, dim, build_s)
    start = time.perf_counter()
    truth = exact_search(vectors, queries, K)
    exact_qps = n_queries / (time.perf_counter() - start)
    by_ef = {}
    for ef in ef_values:
        index.index.hnsw.efSearch = ef
        index.params = HnswParams(defaults.hnsw_m, defaults.ef_construction, ef)
        start = time.perf_counter()
        found = [[item for item, _ in row] for row in index.search(queries, K)]
        qps = n_queries / (time.perf_counter() - start)
        by_ef[str(ef)] = {
            "recall_at_10": round(recall_at_k(found, truth, ids), 4),
            "queries_per_s": round(qps, 1),
        }
        log.info("ann n=%d dim=%d ef=%d: %s", n, dim, ef, by_ef[str(ef)])
    return {
        "items": n,
        "dim": dim,
        "queries": n_queries,
        "build_s": round(build_s, 2),
        "exact_queries_per_s": round(exact_qps, 1),
        "by_ef_search": by_ef,
        "hnsw": {"m": defaults.hnsw_m, "ef_construction": defaults.ef_construction},
    }


def ann_recall(ctx: BenchContext) -> dict:
    """recall@10 of the export job's HNSW index (its default parameters) vs brute force, per dimension."""
    opts = ctx.options
    sizes = {
        str(dim): one_size(opts.ann_items, dim, opts.ann_queries, opts.ann_ef_search, opts.seed)
        for dim in opts.ann_dims
    }
    default_ef = str(IndexConfig().ef_search)
    rows = []
    for dim, fig in sizes.items():
        at_default = fig["by_ef_search"].get(default_ef) or next(iter(fig["by_ef_search"].values()))
        rows += [
            headline(
                f"recall@10, {fig['items']} x {dim}, efSearch {default_ef}",
                _single(at_default["recall_at_10"]),
            ),
            headline(f"HNSW queries/s ({dim}-d)", _single(at_default["queries_per_s"]), "q/s"),
            headline(f"exact queries/s ({dim}-d, numpy)", _single(fig["exact_queries_per_s"]), "q/s"),
            headline(f"HNSW build ({fig['items']} x {dim})", _single(fig["build_s"]), "s"),
        ]
    return {"figures": {"by_dim": sizes}, "headline": rows}


def _single(value: float) -> dict:
    return {"median": value, "min": value, "max": value}
