"""A similar-items ANN index keyed by item_id (FAISS HNSW or IVF-PQ, inner product): upserts, removals."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlclip_core.index import store

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
STATE_FILE = store.STATE_FILE
HNSW, IVFPQ = "hnsw", "ivfpq"
POINTS_PER_LIST = 39  # FAISS k-means wants at least this many training points per centroid


@dataclass(frozen=True)
class HnswParams:
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    kind: str = HNSW


@dataclass(frozen=True)
class IvfPqParams:
    nlist: int = 4096
    pq_m: int = 64
    nbits: int = 8
    nprobe: int = 32
    kind: str = IVFPQ

    def fitted(self, n_train: int) -> "IvfPqParams":
        """Lists and code bits a sample of n_train vectors can train (k-means needs points per centroid)."""
        nlist = max(1, min(self.nlist, n_train // POINTS_PER_LIST))
        nbits = max(1, min(self.nbits, int(np.log2(max(n_train, 2)))))
        return replace(self, nlist=nlist, nbits=nbits)


Params = Union[HnswParams, IvfPqParams]


class ItemIndex:
    """Unit vectors searched by inner product; FAISS label i is row i of `ids` (None when free).

    HNSW graphs cannot drop a node: a removed or replaced item's label is masked out of every search
    (a FAISS ID selector) and `compact()` rebuilds the graph from the live vectors. IVF-PQ lists drop
    codes for real: a replaced item keeps its label, and a removed item's label is reused by the next
    new item. An IVF-PQ index must be `train`ed on a sample before its first upsert.
    """

    def __init__(self, dim: int, params: Params = HnswParams()):
        self.dim = dim
        self.params = params
        self.index = _hnsw(dim, params) if params.kind == HNSW else None
        self.ids: List[Optional[str]] = []
        self.labels: Dict[str, int] = {}
        self._free: List[int] = []

    @property
    def kind(self) -> str:
        return self.params.kind

    @property
    def trained(self) -> bool:
        return self.index is not None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def removed(self) -> int:
        """Nodes still in the index whose item is gone or replaced (masked out of searches)."""
        return len(self.ids) - len(self.labels) if self.kind == HNSW else 0

    def train(self, sample: np.ndarray) -> None:
        """Train the IVF-PQ coarse quantizer and codebooks on `sample` (a few hundred thousand at most)."""
        import faiss

        sample = self._checked_vectors(sample)
        if self.kind != IVFPQ or not len(sample):
            raise ValueError(f"train needs an ivfpq index and vectors, got {self.kind} and {len(sample)}")
        if self.dim % self.params.pq_m:
            raise ValueError(f"index.pq_m={self.params.pq_m} must divide the embedding dimension {self.dim}")
        self.params = self.params.fitted(len(sample))
        quantizer = faiss.IndexFlatIP(self.dim)
        p = self.params
        index = faiss.IndexIVFPQ(quantizer, self.dim, p.nlist, p.pq_m, p.nbits, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        index.nprobe = self.params.nprobe
        self.index = index
        log.info("ivfpq trained on %d vectors: %s", len(sample), self.params)

    def upsert(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add items; an item already present gets the new vector."""
        vectors = self._checked(item_ids, vectors)
        if self.kind == HNSW:
            self.remove([i for i in item_ids if i in self.labels])
            self.index.add(vectors)
            labels = range(len(self.ids), len(self.ids) + len(item_ids))
            self.ids.extend(item_ids)
        else:
            labels = self._ivf_labels(item_ids)
            self.index.add_with_ids(vectors, np.asarray(labels, dtype=np.int64))
        self.labels.update(zip(item_ids, labels))

    def _ivf_labels(self, item_ids: Sequence[str]) -> List[int]:
        if not self.trained:
            raise ValueError("an ivfpq index must be trained before its first upsert")
        replaced = [self.labels[i] for i in item_ids if i in self.labels]
        if replaced:
            self.index.remove_ids(np.asarray(replaced, dtype=np.int64))
        labels = []
        for item_id in item_ids:
            label = self.labels.get(item_id)
            if label is None:
                label = self._free.pop() if self._free else len(self.ids)
                if label == len(self.ids):
                    self.ids.append(None)
                self.ids[label] = item_id
            labels.append(label)
        return labels

    def remove(self, item_ids: Sequence[str]) -> int:
        """Take these items out of every search; unknown ids are ignored. Returns how many were removed."""
        gone = [self.labels.pop(i) for i in dict.fromkeys(item_ids) if i in self.labels]
        for label in gone:
            self.ids[label] = None
        if self.kind == IVFPQ and gone:
            self.index.remove_ids(np.asarray(gone, dtype=np.int64))
            self._free.extend(gone)
        return len(gone)

    def compact(self) -> "ItemIndex":
        """An HNSW index holding only the live items (the graph rebuilt without masked nodes);
        IVF-PQ holds no masked codes, so it is returned as it is."""
        if self.kind != HNSW:
            return self
        live = sorted(self.labels.items(), key=lambda kv: kv[1])
        fresh = ItemIndex(self.dim, self.params)
        if live:
            vectors = self.index.reconstruct_n(0, len(self.ids))[[label for _, label in live]]
            fresh.upsert([item_id for item_id, _ in live], vectors)
        return fresh

    def vector(self, item_id: str) -> np.ndarray:
        """The item's stored vector (IVF-PQ: its decoded, approximate code)."""
        if item_id not in self.labels:
            raise KeyError(f"item {item_id!r} is not in the index")
        if self.kind == IVFPQ and not self.index.direct_map.type:
            import faiss

            self.index.set_direct_map_type(faiss.DirectMap.Hashtable)  # built on the first lookup only
        return self.index.reconstruct(self.labels[item_id])

    def search(self, vectors: np.ndarray, k: int) -> List[List[Tuple[str, float]]]:
        """The k nearest live items (item_id, inner product) of each query vector, best first."""
        queries = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        if not self.labels or k <= 0:
            return [[] for _ in range(len(queries))]
        scores, labels = self.index.search(queries, min(k, len(self.labels)), params=self._search_params())
        return [
            [(self.ids[label], float(score)) for label, score in zip(row_labels, row_scores) if label >= 0]
            for row_labels, row_scores in zip(labels, scores)
        ]

    def similar(self, item_id: str, k: int) -> List[Tuple[str, float]]:
        """The k items most similar to `item_id` (itself excluded)."""
        hits = self.search(self.vector(item_id), k + 1)[0]
        return [hit for hit in hits if hit[0] != item_id][:k]

    def _search_params(self):
        import faiss

        if self.kind == IVFPQ:
            params = faiss.SearchParametersIVF()
            params.nprobe = self.params.nprobe
            return params
        params = faiss.SearchParametersHNSW()
        params.efSearch = self.params.ef_search
        if self.removed:
            live = np.zeros(len(self.ids), dtype=bool)
            live[list(self.labels.values())] = True
            self._bitmap = np.packbits(live, bitorder="little")  # kept alive while FAISS holds a pointer
            params.sel = faiss.IDSelectorBitmap(len(self.ids), faiss.swig_ptr(self._bitmap))
        return params

    def _checked_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dim {self.dim}, got shape {vectors.shape}")
        return vectors

    def _checked(self, item_ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        vectors = self._checked_vectors(vectors)
        if len(vectors) != len(item_ids):
            raise ValueError(f"expected {len(item_ids)} vectors of dim {self.dim}, got shape {vectors.shape}")
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("item_ids must be unique within one upsert")
        return vectors

    def save(self, directory: str, state: dict) -> None:
        """Write index, id map and `state` (JSON) under `directory` (a local path or an fsspec URL);
        a reader sees the old or the new index, never a mix (store.publish)."""
        import faiss

        def write(fs, generation: str) -> None:
            if self.trained:
                with fs.open(f"{generation}/{INDEX_FILE}", "wb") as fh:
                    faiss.write_index(self.index, faiss.PyCallbackIOWriter(fh.write))
            with fs.open(f"{generation}/{IDS_FILE}", "wb") as fh:
                pq.write_table(pa.table({"item_id": pa.array(self.ids, pa.string())}), fh)

        store.publish(directory, write, dict(state, dim=self.dim, items=len(self), removed=self.removed,
                                             trained=self.trained, **_params_state(self.params)))

    @classmethod
    def load(
        cls, directory: str, ef_search: Optional[int] = None, nprobe: Optional[int] = None
    ) -> "ItemIndex":
        import faiss

        state = read_state(directory)
        if state is None:
            raise FileNotFoundError(f"no ANN index in {directory}")
        index = cls(state["dim"], _params_from(state, ef_search, nprobe))
        fs, generation = store.generation(directory, state)
        if state.get("trained", True):
            with fs.open(f"{generation}/{INDEX_FILE}", "rb") as fh:
                index.index = faiss.read_index(faiss.PyCallbackIOReader(fh.read))
            if index.kind == HNSW:
                index.index.hnsw.efSearch = index.params.ef_search
        with fs.open(f"{generation}/{IDS_FILE}", "rb") as fh:
            index.ids = pq.read_table(fh).column("item_id").to_pylist()
        index.labels = {item_id: label for label, item_id in enumerate(index.ids) if item_id is not None}
        if index.kind == IVFPQ:
            index._free = [label for label, item_id in enumerate(index.ids) if item_id is None]
        return index


def _hnsw(dim: int, params: HnswParams):
    import faiss

    index = faiss.IndexHNSWFlat(dim, params.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params.ef_construction
    index.hnsw.efSearch = params.ef_search
    return index


def _params_state(params: Params) -> dict:
    if params.kind == HNSW:
        return {"kind": HNSW, "hnsw": {"m": params.m, "ef_construction": params.ef_construction}}
    return {"kind": IVFPQ, "ivfpq": {"nlist": params.nlist, "pq_m": params.pq_m, "nbits": params.nbits}}


def _params_from(state: dict, ef_search: Optional[int], nprobe: Optional[int]) -> Params:
    if state.get("kind", HNSW) == HNSW:
        hnsw = state["hnsw"]
        return HnswParams(hnsw["m"], hnsw["ef_construction"], ef_search or HnswParams.ef_search)
    ivf = state["ivfpq"]
    return IvfPqParams(ivf["nlist"], ivf["pq_m"], ivf["nbits"], nprobe or IvfPqParams.nprobe)


def read_state(directory: str) -> Optional[dict]:
    """The saved index's state (Delta version applied, counts, kind), or None when there is no index."""
    return store.read_state(directory)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indexes of the k largest inner products of each query (brute force, ties by lower index)."""
    scores = np.asarray(queries, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]
