"""Search a built index: ``Searcher`` (an opened index plus the encoder that built it) and one-shot ``search``.

Opening rebuilds the encoder the manifest records and refuses a different one, so a query is always embedded the
way the index was. Dense search is FAISS over the index's vectors; ``hybrid`` and ``bm25`` go through ``fusion``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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


class Searcher:
    """An opened index plus the encoder that built it; keep one around to answer many queries fast."""

    def __init__(self, collection: Collection, encoder) -> None:
        if encoder is not None and encoder.fingerprint() != collection.fingerprint:
            raise IndexMismatchError(
                f"{collection.path} was built by another encoder "
                f"({describe_difference(collection.manifest['encoder']['identity'], encoder)}); query it with the "
                "encoder that built it (leave out --model to use it), or rebuild the index"
            )
        self.collection = collection
        self.encoder = encoder

    @classmethod
    def open(cls, index: str | Path | None = None, encoder=None, **encoder_overrides: Any) -> Searcher:
        """Open an index; without ``encoder`` the one recorded in its manifest is built (device/dtype overridable)."""
        collection = Collection.open(resolve_index_path(index))
        if encoder is None:
            encoder = _recorded_encoder(collection, encoder_overrides)
        return cls(collection, encoder)

    def search(self, queries: str | list[str], k: int = 5, mode: str = "dense") -> list[Hit] | list[list[Hit]]:
        """Top-``k`` chunks for each query (a list of hits, or a list of lists for a list of queries)."""
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
        single = isinstance(queries, str)
        qs = [queries] if single else list(queries)
        if mode == "dense":
            results = self.collection.search_vectors(self.encoder.encode_queries(qs), k)
        else:
            from .fusion import hybrid_search

            results = hybrid_search(self, qs, k, mode)
        return results[0] if single else results


def _recorded_encoder(collection: Collection, overrides: dict[str, Any]):
    """Rebuild the encoder an index records, starting fast: the tokenizer is parsed in a thread while torch loads,
    without the transformers wrapper; if its ids differ from those recorded at build time, the transformers
    tokenizer is used instead."""
    from ..embedding.backbones import ModelNotFoundError, load_tokenizer, prefetch_tokenizer, resolve_model_dir
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
    try:
        prefetch_tokenizer(resolve_model_dir(settings["model"]))
    except ModelNotFoundError:
        pass  # from_pretrained below reports it
    from ..embedding.encoder import SFPEncoder  # imports torch and transformers

    encoder = SFPEncoder.from_pretrained(settings.pop("model"), fast_tokenizer=True, **settings)
    expected = collection.manifest["encoder"].get("probe_ids")
    if expected is not None and encoder.probe_ids() != expected:
        logger.info("the fast tokenizer disagrees with the one that built %s; using transformers'", collection.path)
        encoder = SFPEncoder(
            encoder.model, load_tokenizer(encoder.config.model), encoder.config, device=encoder.device
        )
    return encoder


def search(query: str, index: str | Path | None = None, k: int = 5, **kwargs: Any) -> list[Hit]:
    """One-shot search: open ``index``, embed ``query``, return the top ``k`` chunks."""
    return Searcher.open(index, **kwargs).search(query, k)
