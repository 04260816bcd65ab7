"""Hybrid retrieval: fusing a dense (cosine) ranking with a BM25 ranking.

Three fusions, all over the union of the two candidate sets (each system's top ``depth``):

- ``convex`` (the default): ``alpha * dense / dense_max + (1 - alpha) * bm25 / bm25_max`` after moving each score's
  theoretical floor to 0 (cosine: -1, so ``dense`` means ``cosine + 1``; BM25: 0), where ``*_max`` is the query's
  best score of that system. This is the "theoretical min-max" convex combination (TM2C2) of Bruch et al. (ACM TOIS
  2023), who found it the most robust of the normalisations they compared once ``alpha`` is tuned on a few labelled
  queries. Every candidate gets its own dense score: candidates that only BM25 found are scored against the stored
  vectors (``dense_lookup``), so a good lexical match is not treated as a bad semantic one; where no lookup is
  given they get the lowest dense score retrieved (an upper bound on theirs). A dense-only candidate gets BM25's
  floor, 0 (BM25 scores only the texts it returns here).
- ``minmax``: each ranking min-max normalised over its own top ``depth`` candidates, a candidate missing from a
  ranking scoring 0 there (LlamaIndex's ``relative_score`` and Pyserini's hybrid searcher work this way; the
  default before TM2C2, kept for comparison).
- ``rrf``: reciprocal-rank fusion, ``sum over rankings of 1 / (k + rank)`` (rank counted from 1; Cormack et al. 2009,
  k=60); needs no calibration and no labels.

``DEFAULT_ALPHAS`` (the dense weight of each convex fusion) were chosen on NFCorpus's train queries with
``benchmarks/fusion_sweep.py``, never on test qrels. Fused scores are in [0, 1] (convex, minmax) or around 1/60
(rrf); none is a similarity.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

RRF_K = 60
DEFAULT_DEPTH = 100
FUSIONS = ("convex", "minmax", "rrf")
DEFAULT_FUSION = "convex"
# dense weight of each convex fusion, chosen on NFCorpus train for the default model (module docstring): convex the
# argmax of a 0.05 grid over the centered index (the default since centering; 0.75 before it); minmax that of the
# 0.1 grid it shipped with, uncentered (0.35 on the finer grid, +0.05 nDCG@10)
DEFAULT_ALPHAS = {"convex": 0.7, "minmax": 0.3}
DEFAULT_ALPHA = DEFAULT_ALPHAS[DEFAULT_FUSION]
COSINE_FLOOR = -1.0  # the lowest cosine: TM2C2's theoretical minimum of the dense scores (BM25's is 0)


def resolve_alpha(fusion: str, alpha: float | None) -> float | None:
    """The dense weight ``fusion`` uses: ``alpha``, or the fusion's tuned default when None (None for rrf)."""
    if fusion not in DEFAULT_ALPHAS:
        return None
    return DEFAULT_ALPHAS[fusion] if alpha is None else float(alpha)


def check_fusion(fusion: str, alpha: float | None = None) -> None:
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha (the dense weight of convex fusion) must be in [0, 1], got {alpha!r}")


def rrf_fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked id lists (best first; -1 ignored) into ``(id, score)`` pairs, best first; ties by smaller id."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate((d for d in ranking if d >= 0), start=1):
            scores[int(doc)] = scores.get(int(doc), 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _ranked(fused: dict[Hashable, float]) -> list[tuple[Hashable, float]]:
    return sorted(fused.items(), key=lambda item: (-item[1], str(item[0])))  # ties by id: a deterministic order


def _minmax(scores: Mapping[Hashable, float]) -> dict[Hashable, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {d: (s - lo) / span if span > 0 else 1.0 for d, s in scores.items()}


def minmax_fuse(
    dense: Mapping[Hashable, float], sparse: Mapping[Hashable, float], alpha: float = DEFAULT_ALPHAS["minmax"]
) -> list[tuple[Hashable, float]]:
    """``alpha * minmax(dense) + (1 - alpha) * minmax(sparse)`` over the union of both candidate sets (a candidate
    missing from one ranking scores 0 there), best first."""
    nd, ns = _minmax(dense), _minmax(sparse)
    return _ranked({d: alpha * nd.get(d, 0.0) + (1.0 - alpha) * ns.get(d, 0.0) for d in nd.keys() | ns.keys()})


def convex_fuse(
    dense: Mapping[Hashable, float],
    sparse: Mapping[Hashable, float],
    alpha: float = DEFAULT_ALPHA,
    dense_lookup: Mapping[Hashable, float] | None = None,
) -> list[tuple[Hashable, float]]:
    """TM2C2 over the union of both candidate sets, best first: ``alpha * (c + 1) / (c_max + 1) + (1 - alpha) *
    b / b_max`` for a candidate's cosine ``c`` and BM25 score ``b``.

    ``dense`` are the dense system's candidates; ``dense_lookup`` the cosines of other candidates (those only BM25
    found), where known. A candidate with neither gets the lowest cosine in ``dense``; one missing from ``sparse``
    gets BM25's floor, 0."""
    lookup = dense_lookup or {}
    ids = dense.keys() | sparse.keys()
    cosine = {d: dense[d] if d in dense else lookup.get(d) for d in ids}
    known = [c for c in cosine.values() if c is not None]
    if known:
        floor = min(dense.values()) if dense else COSINE_FLOOR
        top = max(known) - COSINE_FLOOR
        dense_part = {
            d: ((floor if c is None else c) - COSINE_FLOOR) / top if top > 0 else 1.0 for d, c in cosine.items()
        }
    else:
        dense_part = dict.fromkeys(ids, 0.0)
    best_bm25 = max(sparse.values(), default=0.0)
    sparse_part = {d: sparse.get(d, 0.0) / best_bm25 if best_bm25 > 0 else 0.0 for d in ids}
    return _ranked({d: alpha * dense_part[d] + (1.0 - alpha) * sparse_part[d] for d in ids})


def fuse_scores(
    dense: Mapping[Hashable, float],
    sparse: Mapping[Hashable, float],
    fusion: str = DEFAULT_FUSION,
    alpha: float | None = None,
    dense_lookup: Mapping[Hashable, float] | None = None,
) -> list[tuple[Hashable, float]]:
    """One query's dense and BM25 candidates (id -> score) fused, best first (``alpha`` None: the fusion's tuned
    weight; ``dense_lookup``: cosines of candidates outside ``dense``, used by ``convex``)."""
    check_fusion(fusion, alpha)
    if fusion == "convex":
        return convex_fuse(dense, sparse, resolve_alpha(fusion, alpha), dense_lookup)
    if fusion == "minmax":
        return minmax_fuse(dense, sparse, resolve_alpha(fusion, alpha))
    ids = sorted(dense.keys() | sparse.keys(), key=str)
    index = {d: i for i, d in enumerate(ids)}

    def ranking(run: Mapping[Hashable, float]) -> list[int]:
        return [index[d] for d, _ in sorted(run.items(), key=lambda x: (-x[1], str(x[0])))]

    return [(ids[i], s) for i, s in rrf_fuse([ranking(dense), ranking(sparse)])]


def _row(scores: np.ndarray, ids: np.ndarray) -> dict[int, float]:
    return {int(i): float(s) for s, i in zip(scores, ids) if i >= 0}


def _lookup(collection, query: np.ndarray, rows: set[int]) -> dict[int, float]:
    """Exact inner products of ``query`` (as searched) with the vectors of ``rows`` as the index holds them."""
    if not rows:
        return {}
    order = sorted(rows)
    return dict(zip(order, (collection.searched_vectors(order) @ query).tolist()))


def hybrid_search(
    searcher,
    queries: list[str],
    k: int,
    mode: str,
    depth: int = DEFAULT_DEPTH,
    fusion: str = DEFAULT_FUSION,
    alpha: float | None = None,
    vectors: np.ndarray | None = None,
    search_params: dict[str, int] | None = None,
):
    """Hits for ``queries`` from an opened ``searcher.Searcher``: ``bm25`` alone, or ``hybrid`` (fused; ``vectors``
    are the queries' embeddings, computed here when not given). For ``convex``, the chunks only BM25 found are
    scored against the index's stored vectors. Each hit carries its cosine and its BM25 score (0.0 when BM25 did
    not return it among its top ``depth``)."""
    collection = searcher.collection
    depth = max(depth, k)
    sparse_scores, sparse_ids = collection.bm25.search(queries, depth)
    if mode == "bm25":
        return [
            [collection.hit(i, s, bm25=s) for s, i in zip(srow, irow) if i >= 0][:k]
            for srow, irow in zip(sparse_scores, sparse_ids)
        ]
    if vectors is None:
        vectors = searcher.embedder().encode_queries(queries)
    vectors = collection.search_queries(vectors)
    dense_scores, dense_ids = collection.faiss.search(vectors, min(depth, collection.ntotal), search_params)
    results = []
    for query, ds, di, ss, si in zip(vectors, dense_scores, dense_ids, sparse_scores, sparse_ids):
        dense, sparse = _row(ds, di), _row(ss, si)
        lookup = _lookup(collection, query, sparse.keys() - dense.keys()) if fusion == "convex" else {}
        fused = fuse_scores(dense, sparse, fusion, alpha, lookup)[:k]
        # every hit carries its own cosine and BM25 score (the fused score is relative to the query's best)
        lookup.update(_lookup(collection, query, {i for i, _ in fused} - dense.keys() - lookup.keys()))
        cosine = {**dense, **lookup}
        results.append([collection.hit(i, s, cosine=cosine[i], bm25=sparse.get(i, 0.0)) for i, s in fused])
    return results
