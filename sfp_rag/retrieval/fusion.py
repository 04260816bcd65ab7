"""Hybrid retrieval: reciprocal-rank fusion (RRF) of a dense and a BM25 ranking.

RRF scores a document by ``sum over rankings of 1 / (k + rank)`` (rank counted from 1; Cormack et al. 2009, k=60),
so it needs no score calibration between cosine similarities and BM25 scores. Each ranking is cut at ``depth``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

RRF_K = 60
DEFAULT_DEPTH = 100


def rrf_fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked id lists (best first; -1 ignored) into ``(id, score)`` pairs, best first; ties by smaller id."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate((d for d in ranking if d >= 0), start=1):
            scores[int(doc)] = scores.get(int(doc), 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def fuse_runs(
    dense_ids: np.ndarray, sparse_ids: np.ndarray, k: int, rrf_k: int = RRF_K
) -> list[list[tuple[int, float]]]:
    """Row-wise RRF of two (Q, depth) id matrices; the top ``k`` of each row."""
    return [rrf_fuse([d, s], rrf_k)[:k] for d, s in zip(dense_ids, sparse_ids)]


def hybrid_search(searcher, queries: list[str], k: int, mode: str, depth: int = DEFAULT_DEPTH):
    """Hits for ``queries`` from an opened ``searcher.Searcher``: ``bm25`` alone, or ``hybrid`` (RRF)."""
    from .bm25 import BM25Index
    from .index_folder import BM25_DIR, IndexFolderError

    collection = searcher.collection
    if collection._bm25 is None:
        if not (collection.path / BM25_DIR).exists():
            raise IndexFolderError(
                f"{collection.path} has no BM25 index; rebuild it with: sfp-rag index <docs> "
                f"--name {collection.path.name} --hybrid --rebuild"
            )
        collection._bm25 = BM25Index.load(collection.path / BM25_DIR)
    depth = max(depth, k)
    sparse_scores, sparse_ids = collection._bm25.search(queries, depth)
    if mode == "bm25":
        return [
            [collection.hit(i, s) for s, i in zip(srow, irow) if i >= 0][:k]
            for srow, irow in zip(sparse_scores, sparse_ids)
        ]
    _, dense_ids = collection.faiss.search(searcher.encoder.encode_queries(queries), min(depth, collection.ntotal))
    return [[collection.hit(i, s) for i, s in row] for row in fuse_runs(dense_ids, sparse_ids, k)]
