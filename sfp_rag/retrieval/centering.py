"""Corpus centering: per-side mean removal and top-component removal fitted on the indexed corpus.

A decoder's embeddings share a large common part: every chunk embedded with the document prompt lies near one mean
and along a few dominant directions, and every query embedded with the query prompt near another. Cosines are then
driven by what the vectors share with everything else rather than by what they say. "All-but-the-top" (Mu and
Viswanath, ICLR 2018) removes the mean and the top principal components; here it is done per side, fitted at index
time with no labels:

- documents: the mean of the index's chunk vectors and their top ``components`` principal directions;
- queries: the same statistics over *pseudo-queries*, short word spans (4 to 12 words) cut from the corpus's own
  sentences and embedded with the query prompt, because real queries are not known when the index is built.

Both sides are L2-normalised again after the transform, so FAISS inner product stays cosine. The number of
components (5) and the pseudo-query recipe were chosen on NFCorpus **train** (README, ablation); below
``MIN_CHUNKS`` chunks the statistics are too noisy to estimate and the index is left uncentered.

Simplification: sentences are cut with a punctuation rule, not a trained splitter: a span only needs to be a run of
words a user might type, and a wrong cut at an abbreviation changes one span of 1,500.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CENTERING_FILE = "centering.npz"
DEFAULT_COMPONENTS = 5
PSEUDO_QUERIES = 1500
MIN_CHUNKS = 200  # fewer chunks: no centering (5 directions from a handful of vectors fit noise); a guard, not tuned
SPAN_WORDS = (4, 12)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def pseudo_queries(texts: Sequence[str], n: int = PSEUDO_QUERIES, seed: int = 0) -> list[str]:
    """Up to ``n`` word spans (``SPAN_WORDS`` long) from random sentences of ``texts``, reproducibly.

    Texts are visited in a seeded random order, one span from each, again while spans are missing; sentences
    shorter than the shortest span are skipped. Fewer than ``n`` come back only when no text has such a sentence."""
    rng = random.Random(seed)
    lo, hi = SPAN_WORDS
    order = np.random.default_rng(seed).permutation(len(texts))
    out: list[str] = []
    while len(out) < n:
        found = False
        for i in order:
            sentences = [w for w in (s.split() for s in _SENTENCE_END.split(texts[i])) if len(w) >= lo]
            if not sentences:
                continue
            found = True
            words = rng.choice(sentences)
            size = rng.randint(lo, min(hi, len(words)))
            start = rng.randint(0, len(words) - size)
            out.append(" ".join(words[start : start + size]))
            if len(out) == n:
                break
        if not found:
            break
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _top_components(x: np.ndarray, mean: np.ndarray, k: int) -> np.ndarray:
    if k == 0:
        return np.zeros((0, x.shape[1]), dtype=np.float32)
    return np.linalg.svd(x - mean, full_matrices=False)[2][:k].astype(np.float32)  # (k, d), orthonormal rows


@dataclass
class Centering:
    """The fitted statistics: a mean and ``k`` orthonormal directions per side (``(d,)`` and ``(k, d)``)."""

    doc_mean: np.ndarray
    doc_components: np.ndarray
    query_mean: np.ndarray
    query_components: np.ndarray

    def __post_init__(self) -> None:
        d = self.doc_mean.shape[-1]
        for name in ("doc_mean", "query_mean"):
            if getattr(self, name).shape != (d,):
                raise ValueError(f"{name} must have shape ({d},), got {getattr(self, name).shape}")
        for name in ("doc_components", "query_components"):
            value = getattr(self, name)
            if value.ndim != 2 or value.shape[1] != d:
                raise ValueError(f"{name} must have shape (k, {d}), got {value.shape}")

    @property
    def components(self) -> int:
        return int(self.doc_components.shape[0])

    @classmethod
    def fit(cls, documents: np.ndarray, queries: np.ndarray, components: int = DEFAULT_COMPONENTS) -> Centering:
        """Fit on document vectors (N, d) and pseudo-query vectors (M, d); a sample of 100,000 documents at most is
        used for the directions (the mean takes every row)."""
        if components < 0:
            raise ValueError(f"components must be >= 0, got {components}")
        for name, x in (("documents", documents), ("queries", queries)):
            if x.ndim != 2 or x.shape[0] <= components:
                raise ValueError(f"{name} must be (N, d) with more than {components} rows, got shape {x.shape}")
        doc_mean = _mean(documents)
        sample = documents
        if documents.shape[0] > 100_000:
            rows = np.sort(np.random.default_rng(0).choice(documents.shape[0], 100_000, replace=False))
            sample = documents[rows]
        sample = np.asarray(sample, dtype=np.float32)
        queries = np.asarray(queries, dtype=np.float32)
        query_mean = queries.mean(0)
        return cls(
            doc_mean,
            _top_components(sample, doc_mean, components),
            query_mean.astype(np.float32),
            _top_components(queries, query_mean, components),
        )

    def documents(self, x: np.ndarray) -> np.ndarray:
        """Centered, top components removed, unit length: (N, d) float32."""
        return _apply(x, self.doc_mean, self.doc_components)

    def queries(self, x: np.ndarray) -> np.ndarray:
        return _apply(x, self.query_mean, self.query_components)

    # --- files ----------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as f:  # np.savez would add .npz to a name without it
            np.savez(
                f,
                doc_mean=self.doc_mean,
                doc_components=self.doc_components,
                query_mean=self.query_mean,
                query_components=self.query_components,
            )

    @classmethod
    def load(cls, path: str | Path) -> Centering:
        with np.load(path) as data:
            return cls(*(np.asarray(data[k], dtype=np.float32) for k in _FIELDS))


_FIELDS = ("doc_mean", "doc_components", "query_mean", "query_components")


def _mean(x: np.ndarray) -> np.ndarray:
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, x.shape[0], 65536):  # a memory map is read in blocks
        total += np.asarray(x[start : start + 65536], dtype=np.float64).sum(0)
    return (total / x.shape[0]).astype(np.float32)


def _apply(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    single = x.ndim == 1
    c = np.atleast_2d(np.asarray(x, dtype=np.float32)) - mean
    c -= (c @ components.T) @ components
    out = _unit(c)
    return out[0] if single else out


def fit_corpus(
    texts: Sequence[str],
    vectors: np.ndarray,
    embed_queries: Callable[[list[str]], np.ndarray],
    components: int = DEFAULT_COMPONENTS,
    n_queries: int = PSEUDO_QUERIES,
) -> Centering | None:
    """Fit a ``Centering`` for chunks ``texts`` with vectors ``vectors``; ``embed_queries`` embeds the pseudo-queries
    with the query prompt. None when the corpus is too small (``MIN_CHUNKS``) or has too few sentences to cut."""
    if len(texts) < MIN_CHUNKS:
        logger.info("corpus centering skipped: %d chunks, it needs at least %d", len(texts), MIN_CHUNKS)
        return None
    spans = pseudo_queries(texts, n_queries)
    if len(spans) <= 10 * max(components, 1):
        logger.info("corpus centering skipped: only %d pseudo-queries could be cut from the corpus", len(spans))
        return None
    return Centering.fit(vectors, np.asarray(embed_queries(spans), dtype=np.float32), components)


class CenteredRows:
    """A read-only view of (N, d) vectors that applies ``transform`` to the rows it hands out, so a FAISS build can
    read a memory-mapped matrix in blocks without a centered copy on disk."""

    def __init__(self, vectors: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]) -> None:
        self._vectors = vectors
        self._transform = transform
        self.shape = vectors.shape
        self.ndim = 2
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        rows = self._vectors[key]
        return self._transform(rows) if rows.ndim == 2 else self._transform(rows[None])[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)
