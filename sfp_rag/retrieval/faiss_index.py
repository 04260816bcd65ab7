"""A small FAISS wrapper with one knob: the factory string.

Vectors are L2-normalised by the encoder, so inner product is cosine similarity. ``build`` trains the index when its
type needs it (IVF, PQ, ...) and adds vectors in batches; ``search`` searches in batches. Where FAISS sees a GPU (the
``faiss-gpu`` build), building and searching run there; what is saved is always a CPU index, so an index built on a
GPU machine opens anywhere.

Index types: any FAISS factory string (``Flat``, ``HNSW32``, ``IVF1024,Flat``, ``IVF4096,PQ80``, ...), or ``auto``,
which picks by corpus size as FAISS's guidelines do (``choose_factory``). IVF and PQ types are trained on a random
sample (at most 256 vectors per list or centroid). IVF types can keep their inverted lists on disk (``ondisk``):
shards are filled in parallel and merged with FAISS's ``contrib.ondisk``, so the index needs no more memory than one
shard while it is built, and maps its lists from disk when searched. Search parameters (``nprobe``, ``efSearch``)
have defaults recorded with the index and can be set per search.

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
AUTO = "auto"
ONDISK_DATA = "index.ivfdata"  # the on-disk inverted lists, beside index.faiss
_TRAIN_PER_CENTROID = 256  # FAISS warns below 39 and gains little above 256 training vectors per centroid
_SEARCH_BATCH = 4096


def _faiss():
    require("faiss", "Vector search", "pip install faiss-cpu (or faiss-gpu-cu12 on a CUDA machine)")
    import faiss

    return faiss


def faiss_gpus() -> int:
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def choose_factory(n: int, dim: int) -> str:
    """FAISS's guidelines by corpus size: exact search while it is fast (under 100k vectors), IVF with about
    4*sqrt(n) lists up to 1M, and IVF with PQ codes (dim/8 bytes a vector, a 32x smaller index for float32) beyond,
    where memory is what runs out first."""
    if n < 100_000:
        return "Flat"
    nlist = 1 << max(8, round(np.log2(4 * np.sqrt(n))))
    if n < 1_000_000:
        return f"IVF{nlist},Flat"
    m = next(m for m in (dim // 8, dim // 16, dim // 32, 16, 8) if m and dim % m == 0)
    return f"IVF{min(nlist * 4, 65536)},PQ{m}"


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
        """Create, train (if needed) and fill an inner-product index over ``vectors`` (N, d); ``factory`` may be
        ``auto``. ``vectors`` may be a memory map: it is read in blocks."""
        faiss = _faiss()
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be a 2-D array (N, d), got shape {vectors.shape}")
        n, dim = vectors.shape
        factory = choose_factory(n, dim) if factory == AUTO else factory
        index = _empty(faiss, dim, factory)
        if use_gpu is None:
            use_gpu = faiss_gpus() > 0
        gpu_index = _to_gpu(index) if use_gpu else None
        work = gpu_index if gpu_index is not None else index
        if not work.is_trained:
            work.train(training_sample(vectors, factory))
        for start in range(0, n, 65536):
            work.add(np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32))
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

    def search(
        self, queries: np.ndarray, k: int, params: dict[str, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query: scores (Q, k) float32 and ids (Q, k) int64; -1 ids pad short results.

        ``params`` sets search parameters for this call only (``nprobe`` for IVF, ``efSearch`` for HNSW).
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have dim {queries.shape[1]}, the index holds dim {self.dim}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        index = self._gpu if self._gpu is not None else self.index
        if params:
            _set_params(index, check_search_params(self.factory, params))
        try:
            scores, ids = [], []
            for start in range(0, len(queries), _SEARCH_BATCH):
                s, i = index.search(queries[start : start + _SEARCH_BATCH], k)
                scores.append(s)
                ids.append(i)
        finally:
            if params:
                _set_params(index, search_defaults(self.factory))
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
            # on-disk inverted lists are found beside the file (the folder may have moved since it was built)
            flags = faiss.IO_FLAG_ONDISK_SAME_DIR if (Path(path).parent / ONDISK_DATA).exists() else 0
            index = faiss.read_index(str(path), flags)
        except RuntimeError as err:
            raise ValueError(f"{path} is not a readable FAISS index ({_first_line(err)}); rebuild the index") from err
        set_search_defaults(index, factory)
        return cls(index, factory)


def check_factory(factory: str, dim: int = 3840) -> None:
    """Raise a ``ValueError`` now if FAISS cannot parse ``factory`` (checked at a width divisible by the usual PQ
    sizes, before any model is loaded; the real width and the training-set size are checked at build time)."""
    if factory == AUTO:
        return
    faiss = _faiss()
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(
            f"FAISS cannot parse the index type {factory!r} ({_first_line(err)}); use a factory string such as "
            "Flat, HNSW32, IVF256,Flat or IVF256,PQ32"
        ) from None


SEARCH_PARAMS = {"nprobe": "IVF", "efSearch": "HNSW"}  # parameter -> the index type it applies to


def search_defaults(factory: str) -> dict[str, int]:
    """FAISS searches 1 IVF list and a 16-wide HNSW beam by default, which loses many true neighbours; probe
    1/8 of the lists (at least 8) and widen the beam to 64 instead. Not saved in the file: set on every load, and
    recorded in the index's manifest."""
    out = {}
    m = re.search(r"IVF(\d+)", factory)
    if m:
        nlist = int(m.group(1))
        out["nprobe"] = min(nlist, max(8, nlist // 8))
    if "HNSW" in factory:
        out["efSearch"] = 64
    return out


def check_search_params(factory: str, params: dict[str, int]) -> dict[str, int]:
    """Search parameters that apply to ``factory``, checked: a clear error for a misspelt or inapplicable one."""
    for name, value in params.items():
        if name not in SEARCH_PARAMS:
            raise ValueError(f"unknown search parameter {name!r}; known: {sorted(SEARCH_PARAMS)}")
        if SEARCH_PARAMS[name] not in factory:
            raise ValueError(f"{name} applies to {SEARCH_PARAMS[name]} indexes; this one is {factory!r}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return dict(params)


def set_search_defaults(index, factory: str) -> None:
    _set_params(index, search_defaults(factory))


def _set_params(index, params: dict[str, int]) -> None:
    space = _faiss().ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def _empty(faiss, dim: int, factory: str):
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"FAISS cannot build index type {factory!r} for dim {dim}: {_first_line(err)}") from err


def training_sample(vectors: np.ndarray, factory: str, seed: int = 0) -> np.ndarray:
    """The vectors an IVF/PQ index is trained on: all of them, or a random sample of 256 per centroid."""
    n = vectors.shape[0]
    need = min_training_vectors(factory)
    if n < need:
        raise ValueError(
            f"index type {factory!r} needs at least {need} vectors to train, the corpus has {n}; "
            "use a smaller type (e.g. Flat or HNSW32, or auto) for small corpora"
        )
    limit = max(need, 1) * _TRAIN_PER_CENTROID
    if n <= limit:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def build_ondisk(vectors: np.ndarray, factory: str, folder: Path, shard_rows: int = 1_000_000, workers: int = 2):
    """Build an IVF index whose inverted lists live on disk (``folder/index.ivfdata``): train once on a sample, fill
    shards of ``shard_rows`` vectors in parallel, merge them on disk (``faiss.contrib.ondisk``), and write
    ``folder/index.faiss``. Memory stays bounded by the shards in flight, whatever the corpus size."""
    from concurrent.futures import ThreadPoolExecutor

    faiss = _faiss()
    from faiss.contrib.ondisk import merge_ondisk

    n, dim = vectors.shape
    if "IVF" not in factory:
        raise ValueError(f"on-disk indexes need an IVF type (e.g. IVF4096,PQ80), got {factory!r}")
    trained = _empty(faiss, dim, factory)
    trained.train(training_sample(vectors, factory))
    template = folder / ".trained.faiss"
    faiss.write_index(trained, str(template))

    def fill(i: int, start: int) -> str:
        shard = faiss.read_index(str(template))
        stop = min(start + shard_rows, n)
        for lo in range(start, stop, 65536):
            hi = min(lo + 65536, stop)
            shard.add_with_ids(np.ascontiguousarray(vectors[lo:hi], dtype=np.float32), np.arange(lo, hi))
        name = str(folder / f".shard-{i}.faiss")
        faiss.write_index(shard, name)
        return name

    with ThreadPoolExecutor(max(1, workers)) as pool:
        shards = list(pool.map(lambda a: fill(*a), enumerate(range(0, n, shard_rows))))
    index = faiss.read_index(str(template))
    merge_ondisk(index, shards, str(folder / ONDISK_DATA))
    faiss.write_index(index, str(folder / "index.faiss"))
    for name in [*shards, str(template)]:
        Path(name).unlink()
    set_search_defaults(index, factory)
    return FaissIndex(index, factory)


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
