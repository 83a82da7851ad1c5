"""Retrieval metrics in numpy: HITS@k, MRR and NDCG@k from a score matrix and a relevance mask.

Conventions (tested on hand-computed cases in tests/test_train_metrics.py):
- `scores[q, g]` is the similarity of query q to gallery item g; higher is better.
- `relevant[q, g]` is True when g is relevant to q (binary relevance). Queries with no relevant item
  are dropped by the caller (`evaluate.py`) before this module sees them.
- Ties are ranked pessimistically: a relevant item shares its rank with every item of equal score that
  is placed before it, so a model that scores everything equally gets the worst ranks, never the best.
- HITS@k: share of queries with at least one relevant item in the top k. MRR: mean of 1 / rank of the
  first relevant item. NDCG@k: DCG of the top k (gain 1 / log2(rank + 1) per relevant item) divided
  by the ideal DCG of that query (all its relevant items first).
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

KS = (1, 5, 10)
NDCG_K = 10


def relevant_positions(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(q, g) 1-based rank of every gallery item, ties broken against relevant items (pessimistic)."""
    # sort by (score desc, relevant last among equals): lexsort's last key is the primary one
    order = np.stack([np.lexsort((relevant[q].astype(np.int8), -scores[q])) for q in range(scores.shape[0])])
    ranks = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, scores.shape[1] + 1)[None, :]
    return ranks


def first_relevant_rank(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(q,) rank of each query's best-placed relevant item."""
    ranks = relevant_positions(scores, relevant)
    return np.where(relevant, ranks, np.iinfo(ranks.dtype).max).min(axis=1)


def ndcg_per_query(scores: np.ndarray, relevant: np.ndarray, k: int = NDCG_K) -> np.ndarray:
    """(q,) NDCG@k of each query."""
    ranks = relevant_positions(scores, relevant)
    gains = np.where(relevant & (ranks <= k), 1.0 / np.log2(ranks + 1.0), 0.0).sum(axis=1)
    n_rel = np.minimum(relevant.sum(axis=1), k)
    ideal = np.array([np.sum(1.0 / np.log2(np.arange(2, n + 2))) for n in n_rel])
    return gains / ideal


def per_query(scores: np.ndarray, relevant: np.ndarray) -> Dict[str, np.ndarray]:
    """{"first_rank", "ndcg"}: per-query values, so blocks of queries and subsets can be summarised later."""
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} must be equal 2-d shapes")
    if not relevant.any(axis=1).all():
        raise ValueError("every query needs at least one relevant gallery item")
    return {"first_rank": first_relevant_rank(scores, relevant), "ndcg": ndcg_per_query(scores, relevant)}


def summarise(first_rank: np.ndarray, ndcg: np.ndarray, ks: Sequence[int] = KS) -> Dict[str, float]:
    """{"hits_at_1", "hits_at_5", "hits_at_10", "mrr", "ndcg_at_10", "queries"} of a set of queries."""
    out = {f"hits_at_{k}": float(np.mean(first_rank <= k)) for k in ks}
    out.update(
        mrr=float(np.mean(1.0 / first_rank)), ndcg_at_10=float(np.mean(ndcg)), queries=int(first_rank.size)
    )
    return out


def retrieval_metrics(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = KS) -> Dict[str, float]:
    """The summary of one score matrix (see `summarise`)."""
    values = per_query(scores, relevant)
    return summarise(values["first_rank"], values["ndcg"], ks)


def block_per_query(scores: np.ndarray, relevant: np.ndarray, k: int = NDCG_K) -> Dict[str, np.ndarray]:
    """`per_query` of a block of queries by counting, without sorting the gallery: O(k * block * gallery).

    A relevant item of score v ranks 1 + #(scores > v) + #(non-relevant scores == v) + #(relevant items
    of score v placed before it), the same pessimistic ties as `relevant_positions`. Only the k best
    relevant scores of each query are ranked: no other relevant item can reach the top k.
    """
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} must be equal 2-d shapes")
    if not relevant.any(axis=1).all():
        raise ValueError("every query needs at least one relevant gallery item")
    top = best_relevant_scores(scores, relevant, k)
    ranks = np.zeros(top.shape, dtype=np.int64)
    for j in range(top.shape[1]):
        v = top[:, j: j + 1]
        ties_before = (top[:, :j] == v).sum(axis=1)
        ranks[:, j] = 1 + (scores > v).sum(axis=1) + ((scores == v) & ~relevant).sum(axis=1) + ties_before
    valid = top > -np.inf  # pads of queries with fewer than k relevant items
    gains = np.where(valid & (ranks <= k), 1.0 / np.log2(ranks + 1.0), 0.0).sum(axis=1)
    n_rel = np.minimum(relevant.sum(axis=1), k)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[n_rel - 1]
    return {"first_rank": ranks[:, 0], "ndcg": gains / ideal}


def best_relevant_scores(scores: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """(q, min(k, gallery)) the highest scores of each query's relevant items, best first (-inf pads)."""
    kk = min(k, scores.shape[1])
    masked = np.where(relevant, scores, -np.inf)
    top = np.partition(masked, scores.shape[1] - kk, axis=1)[:, scores.shape[1] - kk:]
    return -np.sort(-top, axis=1)
