"""Retrieval metrics and the evaluation's relevance rules on hand-computed cases."""

import math

import numpy as np
import pytest

from vlclip_core import schema as S
from vlclip_core.train.evaluate import IMAGE_TO_IMAGE, TEXT_TO_IMAGE, task_rows
from vlclip_core.train.metrics import first_relevant_rank, ndcg_per_query, retrieval_metrics


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
