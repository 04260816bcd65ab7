"""Search a built index: ``Searcher`` (an opened index plus the encoder that built it) and one-shot ``search``.

Opening rebuilds the encoder the manifest records and refuses a different one, so a query is always embedded the
way the index was. Dense search is FAISS over the index's vectors; ``hybrid`` and ``bm25`` go through ``fusion``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import check_texts
from .faiss_index import check_search_params
from .fusion import DEFAULT_FUSION, check_fusion, hybrid_search
from .index_folder import (
    Collection,
    Hit,
    IndexFolderError,
    IndexMismatchError,
    describe_difference,
    resolve_index_path,
)

logger = logging.getLogger(__name__)

SEARCH_MODES = ("dense", "hybrid", "bm25")
# The lowest cosine between the torch and OpenVINO vectors of the same chunk, over SciFact's 9,008 chunks
# (benchmarks/index_query.py --runtimes torch,openvino): 0.9990 on a Xeon with AMX, 0.9981 on an AMD EPYC. An index
# built by one runtime is searched by the other.
RUNTIMES_MIN_COSINE = 0.998


def default_mode(collection: Collection) -> str:
    """``hybrid`` where the index has BM25 (it measured best on the tuning split), else ``dense``."""
    return "hybrid" if collection.has_bm25 else "dense"


def check_mode(mode: str | None) -> str | None:
    if mode is not None and mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {SEARCH_MODES} (or None for the index's default), got {mode!r}")
    return mode


class Searcher:
    """An opened index plus the encoder that built it; keep one around to answer many queries fast.

    ``encoder`` may be None: the encoder the index records is then built on the first search that needs it (with
    ``encoder_overrides`` such as ``device``/``dtype``), and never for a BM25-only search. Searches embed their
    queries with ``embedder()``: where the model runs on OpenVINO from the cache, that is a torch-free
    ``OpenVINOEncoder``, so a cold search does not import torch; ``load_encoder()`` gives the full ``SFPEncoder``.
    """

    def __init__(self, collection: Collection, encoder, **encoder_overrides: Any) -> None:
        if encoder is not None and encoder.fingerprint() != collection.fingerprint:
            raise IndexMismatchError(
                f"{collection.path} was built by another encoder "
                f"({describe_difference(collection.manifest['encoder']['identity'], encoder)}); query it with the "
                "encoder that built it (leave out --model to use it), or rebuild the index"
            )
        self.collection = collection
        self.encoder = encoder
        self._overrides = encoder_overrides
        self._quick = None  # the torch-free encoder, once tried (False: it cannot serve this index)

    @classmethod
    def open(
        cls, index: str | Path | None = None, encoder=None, lazy: bool = False, **encoder_overrides: Any
    ) -> Searcher:
        """Open an index; without ``encoder`` the one recorded in its manifest is built (device/dtype overridable),
        at once or, with ``lazy=True``, on the first search that needs it (a BM25-only search never does)."""
        searcher = cls(Collection.open(resolve_index_path(index)), encoder, **encoder_overrides)
        if encoder is None and not lazy:
            searcher.load_encoder()
        return searcher

    def load_encoder(self):
        """The encoder the index records, as an ``SFPEncoder`` (built on the first call)."""
        if self.encoder is None:
            self.encoder = _recorded_encoder(self.collection, self._overrides)
        return self.encoder

    def embedder(self):
        """What embeds this searcher's queries: the loaded encoder or, before one is loaded, the torch-free
        ``OpenVINOEncoder`` of the same model where it can serve (see ``OpenVINOEncoder.from_cache``; the same
        vectors), else the encoder the index records, loaded."""
        if self.encoder is None and self._quick is None:
            self._quick = _quick_encoder(self.collection, self._overrides) or False
        return self.encoder or self._quick or self.load_encoder()

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 5,
        mode: str | None = None,
        *,
        fusion: str = DEFAULT_FUSION,
        alpha: float | None = None,
        vectors: np.ndarray | None = None,
        search_params: dict[str, int] | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Top-``k`` chunks for each query (a list of hits, or a list of lists for a list of queries).

        Args:
            mode: ``dense``, ``hybrid`` or ``bm25``; None: ``hybrid`` where the index has BM25, else ``dense``.
            fusion, alpha: how ``hybrid`` fuses (see ``fusion``; alpha None: the fusion's tuned dense weight).
            vectors: the queries' embeddings, when already computed (a server batches them across requests).
            search_params: FAISS search parameters for this search (``nprobe`` for IVF, ``efSearch`` for HNSW);
                the index's defaults are in its manifest (``index.search``).
        """
        check_mode(mode)
        check_fusion(fusion, alpha)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        mode = mode or default_mode(self.collection)
        single = isinstance(queries, str)
        qs = check_texts(queries)
        if any(not q.strip() for q in qs):
            raise ValueError("a query is empty; give some text to search for")
        if search_params:  # before the queries are embedded: a wrong parameter fails at once
            check_search_params(self.collection.manifest["index"]["factory"], search_params)
        if mode != "bm25" and vectors is None:
            vectors = self.embedder().encode_queries(qs)
        if mode == "dense":
            results = self.collection.search_vectors(vectors, k, search_params)
        else:
            results = hybrid_search(
                self, qs, k, mode, fusion=fusion, alpha=alpha, vectors=vectors, search_params=search_params
            )
        return results[0] if single else results


def _recorded_settings(collection: Collection, overrides: dict[str, Any]) -> dict[str, Any]:
    """The encoder settings an index records, with ``overrides`` (device, dtype, runtime); a model or adapter path
    that does not exist here is an ``IndexFolderError`` that says so."""
    from ..embedding.config import EncoderConfig

    recorded = EncoderConfig.from_dict(collection.manifest["encoder"]["config"], where=str(collection.path))
    settings = {**recorded.to_dict(), **overrides}
    for key in ("model", "adapter"):
        value = settings.get(key)
        if value and (value.startswith((".", "/", "~")) or key == "adapter") and not Path(value).expanduser().exists():
            raise IndexFolderError(
                f"{collection.path} was built with the {key} {value!r}, which does not exist here"
                + (" (a relative path is read from the current directory)" if not Path(value).is_absolute() else "")
                + "; run from where it was built, or rebuild the index with a model that exists here"
            )
    return settings


def _quick_encoder(collection: Collection, overrides: dict[str, Any]):
    """The torch-free ``OpenVINOEncoder`` of the recorded encoder, or None where it cannot serve (not converted
    yet, another runtime or device, or a tokenizer that disagrees with the one that built the index)."""
    from ..embedding.openvino_encoder import OpenVINOEncoder

    settings = _recorded_settings(collection, overrides)
    encoder = OpenVINOEncoder.from_cache(settings.pop("model"), **settings)
    if encoder is None:
        return None
    _check_same_as_built(collection, encoder)
    expected = collection.manifest["encoder"].get("probe_ids")
    if expected is not None and encoder.probe_ids() != expected:
        return None  # the full path falls back to transformers' tokenizer
    _note_runtime(collection, encoder)
    return encoder


def _recorded_encoder(collection: Collection, overrides: dict[str, Any]):
    """Rebuild the encoder an index records, starting fast: the tokenizer is parsed in a thread while torch loads,
    without the transformers wrapper; if its ids differ from those recorded at build time, the transformers
    tokenizer is used instead."""
    from ..embedding.backbones import ModelNotFoundError, load_tokenizer, prefetch_tokenizer, resolve_model_dir

    settings = _recorded_settings(collection, overrides)
    try:
        prefetch_tokenizer(resolve_model_dir(settings["model"]))
    except ModelNotFoundError:
        pass  # from_pretrained below reports it
    from ..embedding.encoder import SFPEncoder  # imports torch and transformers

    encoder = SFPEncoder.from_pretrained(settings.pop("model"), fast_tokenizer=True, **settings)
    _check_same_as_built(collection, encoder)
    _note_runtime(collection, encoder)
    expected = collection.manifest["encoder"].get("probe_ids")
    if expected is not None and encoder.probe_ids() != expected:
        logger.info("the fast tokenizer disagrees with the one that built %s; using transformers'", collection.path)
        encoder = SFPEncoder(
            encoder.model, load_tokenizer(encoder.config.model), encoder.config, device=encoder.device
        )
    return encoder


def _check_same_as_built(collection: Collection, encoder) -> None:
    """The model an index records can change under it (an adapter folder retrained in place; the shipped default
    after an upgrade): its queries would then land in another vector space than the index's vectors, silently."""
    if encoder.fingerprint() == collection.fingerprint:
        return
    docs = collection.manifest.get("docs_dir")
    rebuild = f"sfp-rag index {docs} --out {collection.path} --rebuild" if docs else "rebuild it with --rebuild"
    keywords = ", or search it by keywords alone meanwhile (--bm25)" if collection.has_bm25 else ""
    raise IndexMismatchError(
        f"the model that built {collection.path} has changed since "
        f"({describe_difference(collection.manifest['encoder']['identity'], encoder)}), so queries embedded by it "
        f"would not match the index's vectors: re-embed the index ({rebuild}){keywords}"
    )


def _note_runtime(collection: Collection, encoder) -> None:
    built_by = (collection.manifest["encoder"].get("runtime") or {}).get("runtime")
    if built_by and built_by != encoder.runtime["runtime"]:
        logger.info(
            "%s was built with the %s runtime and is searched with %s: their vectors agree to a cosine of %.4f or "
            "more (measured on SciFact), so the results are the same up to near-ties",
            collection.path, built_by, encoder.runtime["runtime"], RUNTIMES_MIN_COSINE,
        )  # fmt: skip


def search(
    query: str | Sequence[str],
    index: str | Path | None = None,
    k: int = 5,
    mode: str | None = None,
    **encoder_overrides: Any,
) -> list[Hit] | list[list[Hit]]:
    """One-shot search: open ``index`` (a name in the index home, or a path), embed ``query``, return the top ``k``
    chunks; ``mode`` as ``Searcher.search``. For many queries keep a ``Searcher`` (or ``Index``) open instead."""
    check_mode(mode)
    return Searcher.open(index, lazy=True, **encoder_overrides).search(query, k, mode)
