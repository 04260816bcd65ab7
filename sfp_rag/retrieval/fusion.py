"""Hybrid retrieval: fusing a dense (cosine) ranking with a BM25 ranking.

Two fusions:

- ``convex`` (the default): each ranking's scores are min-max normalised over its own top ``depth`` candidates, and a
  document scores ``alpha * dense + (1 - alpha) * bm25`` (a document missing from one ranking gets 0 there). Bruch
  et al. (ACM TOIS 2023) show this beats RRF once ``alpha`` is tuned on a few labelled queries; LlamaIndex's
  ``relative_score`` and Pyserini's hybrid searcher work the same way. ``DEFAULT_ALPHA`` was chosen on NFCorpus's
  train queries (``benchmarks/fusion_sweep.py``), never on test qrels.
- ``rrf``: reciprocal-rank fusion, ``sum over rankings of 1 / (k + rank)`` (rank counted from 1; Cormack et al. 2009,
  k=60); needs no calibration and no labels.

Fused scores are in [0, 1] (convex) or around 1/60 (rrf); neither is a similarity.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

RRF_K = 60
DEFAULT_DEPTH = 100
FUSIONS = ("convex", "rrf")
DEFAULT_FUSION = "convex"
DEFAULT_ALPHA = 0.3  # weight of the dense ranking; chosen on NFCorpus train for the default model (module docstring)


def check_fusion(fusion: str, alpha: float) -> None:
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha (the dense weight of convex fusion) must be in [0, 1], got {alpha!r}")


def rrf_fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked id lists (best first; -1 ignored) into ``(id, score)`` pairs, best first; ties by smaller id."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate((d for d in ranking if d >= 0), start=1):
            scores[int(doc)] = scores.get(int(doc), 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _minmax(scores: Mapping[Hashable, float]) -> dict[Hashable, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {d: (s - lo) / span if span > 0 else 1.0 for d, s in scores.items()}


def convex_fuse(
    dense: Mapping[Hashable, float], sparse: Mapping[Hashable, float], alpha: float = DEFAULT_ALPHA
) -> list[tuple[Hashable, float]]:
    """``alpha * minmax(dense) + (1 - alpha) * minmax(sparse)`` over the union of both candidate sets, best first
    (ties by id, so the order is deterministic)."""
    nd, ns = _minmax(dense), _minmax(sparse)
    fused = {d: alpha * nd.get(d, 0.0) + (1.0 - alpha) * ns.get(d, 0.0) for d in nd.keys() | ns.keys()}
    return sorted(fused.items(), key=lambda item: (-item[1], str(item[0])))


def fuse_scores(
    dense: Mapping[Hashable, float],
    sparse: Mapping[Hashable, float],
    fusion: str = DEFAULT_FUSION,
    alpha: float = DEFAULT_ALPHA,
) -> list[tuple[Hashable, float]]:
    """One query's dense and BM25 candidates (id -> score) fused, best first."""
    if fusion == "convex":
        return convex_fuse(dense, sparse, alpha)
    ids = sorted(dense.keys() | sparse.keys(), key=str)
    index = {d: i for i, d in enumerate(ids)}

    def ranking(run: Mapping[Hashable, float]) -> list[int]:
        return [index[d] for d, _ in sorted(run.items(), key=lambda x: (-x[1], str(x[0])))]

    return [(ids[i], s) for i, s in rrf_fuse([ranking(dense), ranking(sparse)])]


def _row(scores: np.ndarray, ids: np.ndarray) -> dict[int, float]:
    return {int(i): float(s) for s, i in zip(scores, ids) if i >= 0}


def hybrid_search(
    searcher,
    queries: list[str],
    k: int,
    mode: str,
    depth: int = DEFAULT_DEPTH,
    fusion: str = DEFAULT_FUSION,
    alpha: float = DEFAULT_ALPHA,
    vectors: np.ndarray | None = None,
    search_params: dict[str, int] | None = None,
):
    """Hits for ``queries`` from an opened ``searcher.Searcher``: ``bm25`` alone, or ``hybrid`` (fused; ``vectors``
    are the queries' embeddings, computed here when not given)."""
    collection = searcher.collection
    depth = max(depth, k)
    sparse_scores, sparse_ids = collection.bm25.search(queries, depth)
    if mode == "bm25":
        return [
            [collection.hit(i, s) for s, i in zip(srow, irow) if i >= 0][:k]
            for srow, irow in zip(sparse_scores, sparse_ids)
        ]
    if vectors is None:
        vectors = searcher.encoder.encode_queries(queries)
    dense_scores, dense_ids = collection.faiss.search(vectors, min(depth, collection.ntotal), search_params)
    return [
        [collection.hit(i, s) for i, s in fuse_scores(_row(ds, di), _row(ss, si), fusion, alpha)[:k]]
        for ds, di, ss, si in zip(dense_scores, dense_ids, sparse_scores, sparse_ids)
    ]
