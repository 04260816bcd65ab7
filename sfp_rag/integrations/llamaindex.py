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
import logging
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import Field, PrivateAttr

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
    max_text_tokens: int | None = Field(default=None, gt=0, description="Cut each text to this many tokens.")

    _encoder: Any = PrivateAttr(default=None)

    def __init__(self, encoder: Any = None, embed_batch_size: int = 32, **data: Any) -> None:
        """Build from settings, or wrap an existing ``SFPEncoder`` passed as ``encoder``."""
        super().__init__(embed_batch_size=embed_batch_size, **data)
        if encoder is None:
            from ..embedding.encoder import SFPEncoder

            overrides = {
                k: getattr(self, k)
                for k in ("adapter", "template", "pooling", "device", "dtype", "max_text_tokens")
                if getattr(self, k) is not None
            }
            encoder = SFPEncoder.from_pretrained(self.model, **overrides)
        self._encoder = encoder
        self.model_name = f"sfp:{encoder.config.model}" + (
            f"+{encoder.config.adapter}" if encoder.config.adapter else ""
        )

    @classmethod
    def class_name(cls) -> str:
        return "SFPEmbedding"

    @property
    def encoder(self):
        """The wrapped ``SFPEncoder``."""
        return self._encoder

    # --- sync -----------------------------------------------------------------------------------------------

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encoder.encode_queries([query], batch_size=1, show_progress_bar=False)[0].tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encoder.encode_documents([text], batch_size=1, show_progress_bar=False)[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        vectors = self._encoder.encode_documents(
            list(texts), batch_size=self.embed_batch_size, show_progress_bar=False
        )
        return vectors.tolist()

    # --- async ----------------------------------------------------------------------------------------------

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class SFPIndexRetriever(BaseRetriever):
    """An ``sfp-rag index`` folder as a LlamaIndex retriever (``retrieve(query) -> list[NodeWithScore]``).

    Args:
        index: index name or folder (as ``sfp-rag query --index``).
        similarity_top_k: chunks per query.
        mode: ``dense``, ``hybrid`` or ``bm25`` (the last two need an index built with ``--hybrid``).
        searcher: an opened ``searcher.Searcher`` to reuse instead of opening ``index``.
    """

    def __init__(
        self,
        index: str | None = None,
        similarity_top_k: int = 5,
        mode: str = "dense",
        searcher: Any = None,
        **kwargs: Any,
    ) -> None:
        from ..retrieval.searcher import Searcher

        super().__init__(**kwargs)
        self.searcher = searcher or Searcher.open(index)
        self.similarity_top_k = similarity_top_k
        self.mode = mode

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.searcher.search(query_bundle.query_str, k=self.similarity_top_k, mode=self.mode)
        return [
            NodeWithScore(
                node=TextNode(
                    text=h.text,
                    id_=f"{h.source}#{h.chunk}",
                    metadata={"source": h.source, "chunk": h.chunk},
                    start_char_idx=h.start,
                    end_char_idx=h.end,
                ),
                score=h.score,
            )
            for h in hits
        ]
