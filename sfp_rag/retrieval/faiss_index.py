"""A small FAISS wrapper with one knob: the factory string.

Vectors are L2-normalised by the encoder, so inner product is cosine similarity. ``build`` trains the index when its
type needs it (IVF, PQ, ...) and adds vectors in batches; ``search`` searches in batches. Where FAISS sees a GPU (the
``faiss-gpu`` build), building and searching run there; what is saved is always a CPU index, so an index built on a
GPU machine opens anywhere.

Simplification: the ids are row numbers of the vector matrix; updating a collection rebuilds the index from the
stored vectors (cheap next to embedding), which works for every index type, HNSW included (it cannot remove ids).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._utils import require

logger = logging.getLogger(__name__)

DEFAULT_FACTORY = "Flat"
_SEARCH_BATCH = 4096


def _faiss():
    require("faiss", "Vector search", "pip install faiss-cpu (or faiss-gpu-cu12 on a CUDA machine)")
    import faiss

    return faiss


def faiss_gpus() -> int:
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def min_training_vectors(factory: str) -> int:
    """The fewest vectors the index type can be trained on (FAISS itself fails, less clearly, below this)."""
    need = 0
    for m in re.finditer(r"IVF(\d+)", factory):
        need = max(need, int(m.group(1)))
    for m in re.finditer(r"PQ(\d+)(?:x(\d+))?", factory):
        need = max(need, 2 ** int(m.group(2) or 8))
    return need


@dataclass
class FaissIndex:
    """A FAISS index over the rows of a vector matrix; ``ids`` returned by ``search`` are row numbers."""

    index: object
    factory: str = DEFAULT_FACTORY

    @classmethod
    def build(cls, vectors: np.ndarray, factory: str = DEFAULT_FACTORY, use_gpu: bool | None = None) -> FaissIndex:
        """Create, train (if needed) and fill an inner-product index over ``vectors`` (N, d)."""
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be a 2-D array (N, d), got shape {vectors.shape}")
        n, dim = vectors.shape
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise ValueError(f"FAISS cannot build index type {factory!r} for dim {dim}: {_first_line(err)}") from err
        if use_gpu is None:
            use_gpu = faiss_gpus() > 0
        gpu_index = _to_gpu(index) if use_gpu else None
        work = gpu_index if gpu_index is not None else index
        if not work.is_trained:
            need = min_training_vectors(factory)
            if n < need:
                raise ValueError(
                    f"index type {factory!r} needs at least {need} vectors to train, the corpus has {n}; "
                    "use a smaller type (e.g. Flat or HNSW32) for small corpora"
                )
            work.train(vectors)
        for start in range(0, n, 65536):
            work.add(vectors[start : start + 65536])
        if gpu_index is not None:
            index = faiss.index_gpu_to_cpu(gpu_index)
        set_search_defaults(index, factory)
        out = cls(index, factory)
        out._gpu = gpu_index
        return out

    def __post_init__(self) -> None:
        self._gpu = None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query: scores (Q, k) float32 and ids (Q, k) int64; -1 ids pad short results."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have dim {queries.shape[1]}, the index holds dim {self.dim}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        index = self._gpu if self._gpu is not None else self.index
        scores, ids = [], []
        for start in range(0, len(queries), _SEARCH_BATCH):
            s, i = index.search(queries[start : start + _SEARCH_BATCH], k)
            scores.append(s)
            ids.append(i)
        return np.concatenate(scores), np.concatenate(ids)

    def use_gpu(self) -> bool:
        """Move searching to the GPU when FAISS has one; True if it did."""
        if self._gpu is None and faiss_gpus() > 0:
            self._gpu = _to_gpu(self.index)
        return self._gpu is not None

    def save(self, path: str | Path) -> None:
        _faiss().write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, factory: str = DEFAULT_FACTORY) -> FaissIndex:
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:
            raise ValueError(f"{path} is not a readable FAISS index ({_first_line(err)}); rebuild the index") from err
        set_search_defaults(index, factory)
        return cls(index, factory)


def check_factory(factory: str, dim: int = 3840) -> None:
    """Raise a ``ValueError`` now if FAISS cannot parse ``factory`` (checked at a width divisible by the usual PQ
    sizes, before any model is loaded; the real width and the training-set size are checked at build time)."""
    faiss = _faiss()
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(
            f"FAISS cannot parse the index type {factory!r} ({_first_line(err)}); use a factory string such as "
            "Flat, HNSW32, IVF256,Flat or IVF256,PQ32"
        ) from None


def set_search_defaults(index, factory: str) -> None:
    """FAISS searches 1 IVF list and a 16-wide HNSW beam by default, which loses many true neighbours; probe
    1/8 of the lists (at least 8) and widen the beam to 64 instead. Not saved in the file: set on every load."""
    faiss = _faiss()
    params = faiss.ParameterSpace()
    m = re.search(r"IVF(\d+)", factory)
    if m:
        nlist = int(m.group(1))
        params.set_index_parameter(index, "nprobe", min(nlist, max(8, nlist // 8)))
    if "HNSW" in factory:
        params.set_index_parameter(index, "efSearch", 64)


def _to_gpu(index):
    faiss = _faiss()
    if faiss_gpus() == 0:
        return None
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError) as err:  # e.g. HNSW has no GPU version
        logger.info("FAISS keeps this index on the CPU: %s", _first_line(err))
        return None


def _first_line(err: Exception) -> str:
    lines = [x for x in str(err).splitlines() if x.strip()]
    return lines[-1] if lines else type(err).__name__


def brute_force_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k by inner product with numpy (for tests and benchmarks)."""
    scores = np.atleast_2d(queries) @ vectors.T  # (Q, N)
    k = min(k, vectors.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (Q, k), unordered
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top, order, axis=1)
