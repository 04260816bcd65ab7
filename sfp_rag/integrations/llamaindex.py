"""LlamaIndex integration: ``SFPEmbedding`` (the SFP encoder as an embedding model) and ``SFPIndexRetriever``
(an ``sfp-rag index`` folder as a retriever).

    from llama_index.core import Settings, VectorStoreIndex
    from sfp_rag.integrations.llamaindex import SFPEmbedding

    Settings.embed_model = SFPEmbedding()          # the default model, offline

A thin adapter: settings are pydantic fields, the ``SFPEncoder`` lives in a private attribute, and every call
delegates to ``encode_queries`` / ``encode_documents``. Async variants run the same code in a worker thread so they
do not block an event loop.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
from pydantic import BaseModel, Field, PrivateAttr

from ..embedding.config import display_name

logger = logging.getLogger(__name__)


class SFPEmbedding(BaseEmbedding):
    """CSE-SFP embeddings from a decoder-only LM (one forward pass per batch)."""

    model: str | None = Field(
        default=None,
        description="Built-in name, model path, hub id or trained adapter dir; None for the shipped default.",
    )
    adapter: str | None = Field(default=None, description="A LoRA adapter directory written by `sfp-rag train`.")
    template: str | None = Field(default=None, description="Prompt preset name or template string.")
    pooling: str | None = Field(default=None, description="rep2 (default), rep1, mean or concat.")
    device: str | None = Field(default=None, description="auto, cpu, cuda, cuda:N.")
    dtype: str | None = Field(default=None, description="auto, float32, bfloat16, float16.")
    runtime: str | None = Field(default=None, description="auto (OpenVINO on a CPU where installed), torch, openvino.")
    max_text_tokens: int | None = Field(default=None, gt=0, description="Cut each text to this many tokens.")
    server: str | None = Field(
        default=None,
        description="URL of a running `sfp-rag serve`: embed there instead of loading a model in this process.",
    )

    _encoder: Any = PrivateAttr(default=None)
    _client: Any = PrivateAttr(default=None)

    def __init__(self, encoder: Any = None, embed_batch_size: int = 32, **data: Any) -> None:
        """Build from settings, or wrap an existing ``SFPEncoder`` passed as ``encoder``."""
        super().__init__(embed_batch_size=embed_batch_size, **data)
        if self.server is not None:
            self.model_name = f"sfp:{self._remote().health()['model']}"
            return
        self._encoder = encoder if encoder is not None else self._build_encoder()
        self.model_name = f"sfp:{display_name(self._encoder.config)}"

    def _remote(self):
        if self._client is None:
            from ..client import SFPClient

            self._client = SFPClient(self.server)
        return self._client

    def _build_encoder(self):
        from ..embedding.encoder import SFPEncoder

        overrides = {
            k: getattr(self, k)
            for k in ("adapter", "template", "pooling", "device", "dtype", "runtime", "max_text_tokens")
            if getattr(self, k) is not None
        }
        return SFPEncoder.from_pretrained(self.model, **overrides)

    # Pickling (multiprocessing, caches, LlamaIndex's own serialisation) carries the settings, not the weights: the
    # encoder is rebuilt from them on first use in the other process.
    # (LlamaIndex's BaseComponent would pickle the encoder to test it, then rebuild it eagerly in __setstate__.)
    def __getstate__(self) -> dict[str, Any]:
        state = BaseModel.__getstate__(self)
        private = {**(state.get("__pydantic_private__") or {}), "_encoder": None, "_client": None}
        return {**state, "__pydantic_private__": private}

    def __setstate__(self, state: dict[str, Any]) -> None:
        BaseModel.__setstate__(self, state)

    @classmethod
    def class_name(cls) -> str:
        return "SFPEmbedding"

    @property
    def encoder(self):
        """The wrapped ``SFPEncoder`` (rebuilt from the settings after unpickling)."""
        if self._encoder is None:
            self._encoder = self._build_encoder()
        return self._encoder

    # --- sync -----------------------------------------------------------------------------------------------

    def _embed(self, texts: list[str], role: str, batch_size: int) -> list[Embedding]:
        if self.server is not None:
            return self._remote().embed(texts, input_type=role).tolist()
        fn = self.encoder.encode_queries if role == "query" else self.encoder.encode_documents
        return fn(texts, batch_size=batch_size, show_progress_bar=False).tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], "query", 1)[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], "document", 1)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(list(texts), "document", self.embed_batch_size)

    # --- async ----------------------------------------------------------------------------------------------

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class SFPIndexRetriever(BaseRetriever):
    """An ``sfp-rag index`` folder as a LlamaIndex retriever (``retrieve(query) -> list[NodeWithScore]``).

    Nodes follow LlamaIndex's metadata conventions (``file_path``, ``file_name``, ``file_type``; plus ``source``,
    ``chunk`` and any metadata the source was added with), so LlamaIndex's filters and post-processors work on them.
    Scores are those of the mode: cosine similarity (``dense``), fused 0..1 (``hybrid``) or BM25 (``bm25``);
    higher is better. Each node's metadata also holds the raw ``cosine`` and ``bm25`` of its chunk: a relevance
    cutoff belongs on the cosine (``SimilarityPostprocessor(similarity_cutoff=...)`` applies to the score, which is
    the cosine only in ``dense`` mode; the fused score is relative to the query's best candidates).

    Args:
        index: index name (in the index home) or path, as ``sfp-rag query --index``.
        similarity_top_k: chunks per query.
        mode: ``dense``, ``hybrid`` or ``bm25``; None: hybrid where the index has BM25, else dense.
        filters: LlamaIndex ``MetadataFilters`` on the node metadata (==, !=, >, <, >=, <=, in, nin, text_match,
            contains; and/or/not).
        path_glob: keep only chunks whose source path matches this glob (``docs/*.md``, ``**/faq*``).
        file_types: keep only these extensions (``[".md", ".pdf"]``).
        searcher: an opened ``searcher.Searcher`` to reuse instead of opening ``index``.
    """

    def __init__(
        self,
        index: str | None = None,
        similarity_top_k: int = 5,
        mode: str | None = None,
        filters: MetadataFilters | None = None,
        path_glob: str | None = None,
        file_types: list[str] | None = None,
        searcher: Any = None,
        **kwargs: Any,
    ) -> None:
        from ..retrieval.searcher import Searcher, check_mode

        check_mode(mode)
        if isinstance(similarity_top_k, bool) or not isinstance(similarity_top_k, int) or similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be a positive integer, got {similarity_top_k!r}")
        super().__init__(**kwargs)
        self.searcher = searcher or Searcher.open(index, lazy=mode == "bm25")
        self.similarity_top_k = similarity_top_k
        self.mode = mode
        self.filters = filters
        self.path_glob = path_glob
        self.file_types = [t if t.startswith(".") else f".{t}" for t in (file_types or [])] or None
        docs_dir = self.searcher.collection.manifest.get("docs_dir")
        self._docs_dir = Path(docs_dir) if docs_dir else None

    def _node(self, hit) -> NodeWithScore:
        path = Path(hit.source)
        full = path if path.is_absolute() or self._docs_dir is None else self._docs_dir / path
        metadata = {
            **(hit.metadata or {}),
            "file_path": str(full),
            "file_name": path.name,
            "file_type": path.suffix.lower(),
            "source": hit.source,
            "chunk": hit.chunk,
            "cosine": hit.cosine,  # the raw scores behind the fused one: a relevance threshold goes on the cosine
            "bm25": hit.bm25,
        }
        node = TextNode(
            text=hit.text,
            id_=f"{hit.source}#{hit.chunk}",
            metadata=metadata,
            start_char_idx=hit.start,
            end_char_idx=hit.end,
            excluded_embed_metadata_keys=list(metadata),
            excluded_llm_metadata_keys=["file_path", "file_type", "source", "chunk", "cosine", "bm25"],
        )
        return NodeWithScore(node=node, score=float(hit.score))

    def _keep(self, node: NodeWithScore) -> bool:
        meta = node.node.metadata
        if self.path_glob and not fnmatch.fnmatch(meta["source"], self.path_glob):
            return False
        if self.file_types and meta["file_type"] not in self.file_types:
            return False
        return self.filters is None or _matches(self.filters, meta)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        k, total = self.similarity_top_k, self.searcher.collection.ntotal
        filtered = bool(self.filters or self.path_glob or self.file_types)
        depth = k * 4 if filtered else k
        while True:  # filters apply after ranking: fetch deeper until k pass or the index is exhausted
            hits = self.searcher.search(query_bundle.query_str, k=min(depth, total), mode=self.mode)
            nodes = [n for n in map(self._node, hits) if self._keep(n)]
            if len(nodes) >= k or depth >= total or not filtered:
                return nodes[:k]
            depth *= 4

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


# --- metadata filters --------------------------------------------------------------------------------------------


def _matches(filters: MetadataFilters, meta: dict[str, Any]) -> bool:
    results = [
        _matches(f, meta) if isinstance(f, MetadataFilters) else _test(f, meta.get(f.key)) for f in filters.filters
    ]
    condition = getattr(filters.condition, "value", filters.condition) or "and"
    if condition == "or":
        return any(results)
    if condition == "not":
        return not any(results)
    return all(results)


def _test(f: MetadataFilter, value: Any) -> bool:
    op, want = getattr(f.operator, "value", f.operator), f.value
    try:
        if op == "==":
            return value == want
        if op == "!=":
            return value != want
        if op in (">", "<", ">=", "<="):
            return value is not None and {">": value > want, "<": value < want, ">=": value >= want,
                                          "<=": value <= want}[op]  # fmt: skip
        if op == "in":
            return value in want
        if op == "nin":
            return value not in want
        if op == "text_match":
            return isinstance(value, str) and str(want) in value
        if op == "text_match_insensitive":
            return isinstance(value, str) and str(want).lower() in value.lower()
        if op == "contains":
            return isinstance(value, list) and want in value
        if op == "any":
            return isinstance(value, list) and any(w in value for w in want)
        if op == "all":
            return isinstance(value, list) and all(w in value for w in want)
        if op == "is_empty":
            return value in (None, "", [])
    except TypeError:
        return False  # a comparison between types that do not compare: not a match
    raise ValueError(f"unsupported metadata filter operator {op!r}")
