"""Retrieval metrics and the evaluation's relevance rules on hand-computed cases."""

import math

import numpy as np
import pytest

from vlclip_core import schema as S
from vlclip_core.train import evaluate
from vlclip_core.train.evaluate import IMAGE_TO_IMAGE, TEXT_TO_IMAGE, task_rows
from vlclip_core.train.metrics import (
    block_per_query,
    first_relevant_rank,
    ndcg_per_query,
    per_query,
    retrieval_metrics,
    summarise,
)


def test_single_relevant_item_per_query():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3], [0.7, 0.6, 0.1]])
    m = retrieval_metrics(scores, np.eye(3, dtype=bool))
    # ranks of the relevant items: 1, 1, 3
    assert m["hits_at_1"] == pytest.approx(2 / 3)
    assert m["hits_at_5"] == m["hits_at_10"] == 1.0
    assert m["mrr"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert m["ndcg_at_10"] == pytest.approx((1 + 1 + 1 / math.log2(4)) / 3)
    assert m["queries"] == 3


def test_ties_rank_relevant_items_last():
    scores = np.array([[0.5, 0.5, 0.5]])
    relevant = np.array([[False, True, False]])
    assert first_relevant_rank(scores, relevant).tolist() == [3]
    assert retrieval_metrics(scores, relevant)["mrr"] == pytest.approx(1 / 3)


def test_several_relevant_items_ndcg():
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    relevant = np.array([[False, True, False, True]])
    m = retrieval_metrics(scores, relevant)
    assert m["hits_at_1"] == 0.0 and m["hits_at_5"] == 1.0
    assert m["mrr"] == pytest.approx(0.5)
    dcg, ideal = 1 / math.log2(3) + 1 / math.log2(5), 1 + 1 / math.log2(3)
    assert m["ndcg_at_10"] == pytest.approx(dcg / ideal)  # 0.6509


def test_cutoff_at_ten():
    scores = -np.arange(12, dtype=float)[None, :]  # item 0 best, item 11 worst
    relevant = np.zeros((1, 12), dtype=bool)
    relevant[0, 10] = True  # rank 11
    assert ndcg_per_query(scores, relevant).tolist() == [0.0]
    m = retrieval_metrics(scores, relevant)
    assert m["hits_at_10"] == 0.0 and m["mrr"] == pytest.approx(1 / 11)


def test_query_without_relevant_item_is_rejected():
    with pytest.raises(ValueError, match="at least one relevant"):
        retrieval_metrics(np.zeros((1, 2)), np.zeros((1, 2), dtype=bool))


def test_task_rows_relevance_and_per_type_groups():
    images = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    texts = images[[1, 0, 2, 3, 4]]  # text 0 matches image 1 better than its own image 0
    types = np.array(["a", "a", "b", "b", "c"], dtype=object)
    rows = {(r["task"], r[S.PRODUCT_TYPE]): r for r in task_rows(images, texts, types)}
    # image->image: self excluded; relevant = the other item of the type; "c" has none: not a query
    i2i = rows[(IMAGE_TO_IMAGE, S.ALL_PRODUCT_TYPES)]
    assert i2i["queries"] == 4 and i2i["gallery"] == 4
    assert i2i["hits_at_1"] == 0.5 and i2i["mrr"] == pytest.approx(0.75)  # ranks 1, 2, 1, 2
    assert rows[(IMAGE_TO_IMAGE, "a")]["mrr"] == pytest.approx(0.75)
    assert (IMAGE_TO_IMAGE, "c") not in rows
    # text->image: the relevant image is the query's own; ranks 3 (e1, e3 score higher), 2, 1, 1, 1
    t2i = rows[(TEXT_TO_IMAGE, S.ALL_PRODUCT_TYPES)]
    assert t2i["queries"] == 5 and t2i["gallery"] == 5
    assert t2i["hits_at_1"] == pytest.approx(3 / 5)
    assert t2i["mrr"] == pytest.approx((1 / 3 + 1 / 2 + 3) / 5)
    assert rows[(TEXT_TO_IMAGE, "a")]["mrr"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert rows[(TEXT_TO_IMAGE, "c")]["hits_at_1"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_blockwise_counts_match_the_full_sort_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(40, 25)).astype(np.float32)  # 4 values: ties everywhere
    scores[:, 3] = -np.inf  # as image->image gives the query itself
    relevant = rng.random((40, 25)) < [[0.03], [0.5]] * 20  # few or many relevant items per query
    relevant[:, 3] = False
    relevant[np.arange(40), rng.integers(4, 25, 40)] = True
    full, blocks = per_query(scores, relevant), block_per_query(scores, relevant)
    assert full["first_rank"].tolist() == blocks["first_rank"].tolist()
    np.testing.assert_allclose(blocks["ndcg"], full["ndcg"], rtol=1e-12)
    # equal but for the order of float additions in NDCG
    summary = summarise(blocks["first_rank"], blocks["ndcg"])
    assert retrieval_metrics(scores, relevant) == pytest.approx(summary)


def test_blockwise_ties_still_count_against_the_model():
    same = block_per_query(np.full((1, 12), 0.5), np.eye(1, 12, 11, dtype=bool))
    assert same["first_rank"].tolist() == [12] and same["ndcg"].tolist() == [0.0]


def test_task_rows_are_the_same_in_blocks_of_one_query(monkeypatch):
    rng = np.random.default_rng(7)
    images = np.round(rng.standard_normal((30, 4)), 1)
    texts = np.round(images + rng.standard_normal((30, 4)) * 0.5, 1)
    types = np.array(list("aabbbcccc") * 3 + [None, "", "z"], dtype=object)
    whole = task_rows(images, texts, types)
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 30)  # one query per block
    assert evaluate.block_rows(30) == 1
    assert task_rows(images, texts, types) == whole
    # the reference: full score matrices and the sort-based ranks
    t2i = retrieval_metrics(texts @ images.T, np.eye(30, dtype=bool))
    overall = [r for r in whole if r["task"] == TEXT_TO_IMAGE and r[S.PRODUCT_TYPE] == S.ALL_PRODUCT_TYPES]
    assert {k: overall[0][k] for k in t2i} == pytest.approx(t2i)


def test_gallery_cap_takes_the_same_hash_sample_every_time(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlclip_core.train.config import EvalConfig
    from vlclip_core.train.evaluate import gallery_ids

    ids = [f"SKU-{i:04d}" for i in range(200)]
    split = ["eval" if i % 4 else "train" for i in range(200)]
    error = [None if i % 10 else "bad image" for i in range(200)]
    table = pa.table({"item_id": ids, "split": split, "error": error})
    pq.write_table(table, str(tmp_path / "part-0.parquet"))
    good = [i for i, s, e in zip(ids, split, error) if s == "eval" and e is None]
    assert gallery_ids(str(tmp_path), EvalConfig(max_gallery=None)) == (good, len(good))
    capped, held_out = gallery_ids(str(tmp_path), EvalConfig(max_gallery=50))
    assert held_out == len(good) and len(capped) == 50
    assert set(capped) < set(good) and capped == sorted(capped)
    assert gallery_ids(str(tmp_path), EvalConfig(max_gallery=50))[0] == capped
    assert capped != good[:50]  # a hash sample, not the first ids
