"""A similar-items ANN index keyed by item_id (FAISS HNSW, inner product): upserts, removals, save/load."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class HnswParams:
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128


class ItemIndex:
    """HNSW graph over L2-normalised vectors; label i is row i of `ids` (None once removed).

    HNSW graphs cannot drop a node: a removed or replaced item's label is masked out of every search
    (a FAISS ID selector) and `compact()` rebuilds the graph from the live vectors.
    """

    def __init__(self, dim: int, params: HnswParams = HnswParams()):
        import faiss

        self.dim = dim
        self.params = params
        self.index = faiss.IndexHNSWFlat(dim, params.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = params.ef_construction
        self.index.hnsw.efSearch = params.ef_search
        self.ids: List[Optional[str]] = []
        self.labels: Dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def removed(self) -> int:
        return len(self.ids) - len(self.labels)

    def upsert(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add items; an item already present gets the new vector (its old node is masked)."""
        vectors = self._checked(item_ids, vectors)
        self.remove([i for i in item_ids if i in self.labels])
        start = len(self.ids)
        self.index.add(vectors)
        self.ids.extend(item_ids)
        self.labels.update({item_id: start + k for k, item_id in enumerate(item_ids)})

    def remove(self, item_ids: Sequence[str]) -> int:
        """Mask these items out of every search; unknown ids are ignored. Returns how many were removed."""
        removed = 0
        for item_id in item_ids:
            label = self.labels.pop(item_id, None)
            if label is not None:
                self.ids[label] = None
                removed += 1
        return removed

    def compact(self) -> "ItemIndex":
        """A new index holding only the live items (the graph rebuilt without masked nodes)."""
        live = sorted(self.labels.items(), key=lambda kv: kv[1])
        fresh = ItemIndex(self.dim, self.params)
        if live:
            vectors = self.index.reconstruct_n(0, len(self.ids))[[label for _, label in live]]
            fresh.upsert([item_id for item_id, _ in live], vectors)
        return fresh

    def vector(self, item_id: str) -> np.ndarray:
        if item_id not in self.labels:
            raise KeyError(f"item {item_id!r} is not in the index")
        return self.index.reconstruct(self.labels[item_id])

    def search(self, vectors: np.ndarray, k: int) -> List[List[Tuple[str, float]]]:
        """The k nearest live items (item_id, inner product) of each query vector, best first."""
        queries = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        if not self.labels or k <= 0:
            return [[] for _ in range(len(queries))]
        scores, labels = self.index.search(queries, min(k, len(self.labels)), params=self._live_only())
        return [
            [(self.ids[label], float(score)) for label, score in zip(row_labels, row_scores) if label >= 0]
            for row_labels, row_scores in zip(labels, scores)
        ]

    def similar(self, item_id: str, k: int) -> List[Tuple[str, float]]:
        """The k items most similar to `item_id` (itself excluded)."""
        hits = self.search(self.vector(item_id), k + 1)[0]
        return [hit for hit in hits if hit[0] != item_id][:k]

    def _live_only(self):
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = self.params.ef_search
        if self.removed:
            live = np.zeros(len(self.ids), dtype=bool)
            live[list(self.labels.values())] = True
            self._bitmap = np.packbits(live, bitorder="little")  # kept alive while FAISS holds a pointer
            params.sel = faiss.IDSelectorBitmap(len(self.ids), faiss.swig_ptr(self._bitmap))
        return params

    def _checked(self, item_ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape != (len(item_ids), self.dim):
            raise ValueError(f"expected {len(item_ids)} vectors of dim {self.dim}, got shape {vectors.shape}")
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("item_ids must be unique within one upsert")
        return vectors

    def save(self, directory: str, state: dict) -> None:
        """Write index, id map and `state` (JSON) to `directory`, replacing it whole: a reader sees
        the old or the new index, never a mix."""
        import faiss

        tmp = directory.rstrip("/") + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        faiss.write_index(self.index, os.path.join(tmp, INDEX_FILE))
        pq.write_table(pa.table({"item_id": pa.array(self.ids, pa.string())}), os.path.join(tmp, IDS_FILE))
        state = dict(
            state,
            dim=self.dim,
            items=len(self),
            removed=self.removed,
            hnsw={"m": self.params.m, "ef_construction": self.params.ef_construction},
        )
        with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=1, sort_keys=True)
        _swap_in(tmp, directory)

    @classmethod
    def load(cls, directory: str, ef_search: Optional[int] = None) -> "ItemIndex":
        import faiss

        state = read_state(directory)
        if state is None:
            raise FileNotFoundError(f"no ANN index in {directory}")
        params = HnswParams(
            state["hnsw"]["m"], state["hnsw"]["ef_construction"], ef_search or HnswParams.ef_search
        )
        index = cls(state["dim"], params)
        index.index = faiss.read_index(os.path.join(directory, INDEX_FILE))
        index.index.hnsw.efSearch = params.ef_search
        index.ids = pq.read_table(os.path.join(directory, IDS_FILE)).column("item_id").to_pylist()
        index.labels = {item_id: label for label, item_id in enumerate(index.ids) if item_id is not None}
        return index


def read_state(directory: str) -> Optional[dict]:
    """The saved index's state (Delta version applied, counts), or None when there is no index."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _swap_in(tmp: str, directory: str) -> None:
    old = directory.rstrip("/") + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(directory):
        os.rename(directory, old)
    os.rename(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indexes of the k largest inner products of each query (brute force, ties by lower index)."""
    scores = np.asarray(queries, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]
