"""The HNSW item index on its own: upserts, masked removals, compaction, save/load, the recall figures."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.ann_bench import one_size, recall_at_k
from vlclip_core.index.ann import ItemIndex, exact_neighbours, read_state

DIM = 16
N = 300


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [f"item-{i:03d}" for i in range(N)], vectors


def exact_sets(ids, vectors, k):
    rows = exact_neighbours(vectors, vectors, k + 1)
    return {ids[i]: {ids[j] for j in row if j != i} for i, row in enumerate(rows)}


def test_similar_is_exact_search_on_a_small_set(data):
    ids, vectors = data
    index = ItemIndex(DIM)
    index.upsert(ids, vectors)
    expected = exact_sets(ids, vectors, 5)
    assert {i: {h for h, _ in index.similar(i, 5)} for i in ids} == expected


def test_removed_and_replaced_items_follow_their_latest_state(data, tmp_path):
    ids, vectors = data
    index = ItemIndex(DIM)
    index.upsert(ids, vectors)
    assert index.remove(ids[:10] + ["never-there"]) == 10
    index.upsert([ids[10]], -vectors[[10]])  # replaced: its old node is masked
    live_ids = ids[10:]
    live = np.concatenate([-vectors[[10]], vectors[11:]])
    assert (len(index), index.removed) == (N - 10, 11)
    hits = index.search(live, 10)
    assert all(h not in ids[:10] for row in hits for h, _ in row)
    assert {i: {h for h, _ in index.similar(i, 5)} for i in live_ids} == exact_sets(live_ids, live, 5)

    index.save(str(tmp_path / "ix"), {"delta_version": 7})
    loaded = ItemIndex.load(str(tmp_path / "ix"))
    assert read_state(str(tmp_path / "ix"))["delta_version"] == 7 and loaded.removed == 11
    compacted = loaded.compact()
    assert (len(compacted), compacted.removed) == (N - 10, 0)
    assert compacted.similar(ids[10], 5) == loaded.similar(ids[10], 5)
    with pytest.raises(KeyError, match="item-000"):
        compacted.similar(ids[0], 5)


def test_upsert_checks_its_input(data):
    ids, vectors = data
    index = ItemIndex(DIM)
    with pytest.raises(ValueError, match="dim 16"):
        index.upsert(ids[:2], vectors[:2, :8])
    with pytest.raises(ValueError, match="unique"):
        index.upsert([ids[0], ids[0]], vectors[:2])


def test_recall_benchmark_figures_on_a_small_set():
    fig = one_size(2000, 16, 50, (16, 128), seed=0)
    assert fig["items"] == 2000 and fig["build_s"] > 0 and fig["exact_queries_per_s"] > 0
    low, high = fig["by_ef_search"]["16"]["recall_at_10"], fig["by_ef_search"]["128"]["recall_at_10"]
    assert 0.0 < low <= high and high >= 0.95
    assert recall_at_k([["a", "b"]], np.array([[0, 2]]), ["a", "b", "c"]) == 0.5
