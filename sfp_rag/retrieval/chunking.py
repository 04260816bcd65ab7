"""Split document text into chunks for embedding: LlamaIndex's ``SentenceSplitter`` counting tokens with the
embedder's own tokenizer, so a chunk's size is what the encoder sees (before the prompt around it); and text into
sentences (``sentences_of``: NLTK's Punkt, the model llama-index-core ships; training views, extractive answers).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

from .documents import Chunk, SkipFile

logger = logging.getLogger(__name__)


def make_splitter(count_tokens: Callable[[str], list], chunk_size: int = 256, chunk_overlap: int = 32):
    """LlamaIndex's sentence-aware splitter, counting tokens with the embedder's tokenizer."""
    if chunk_size < 16:
        raise ValueError(f"chunk_size must be at least 16 tokens, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk_overlap must be in [0, chunk_size), got {chunk_overlap} with chunk_size {chunk_size}")
    from llama_index.core.node_parser import SentenceSplitter

    return SentenceSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        tokenizer=count_tokens,
        include_metadata=False,
        include_prev_next_rel=False,
    )


def chunk_text(splitter, source: str, text: str) -> list[Chunk]:
    from llama_index.core.schema import Document

    nodes = splitter.get_nodes_from_documents([Document(text=text, id_=source)])
    return [Chunk(source, i, n.start_char_idx, n.end_char_idx, n.text) for i, n in enumerate(nodes) if n.text.strip()]


NO_TEXT = "no text left after chunking"


def chunk_sources(sources, splitter) -> dict[str, list[Chunk] | str]:
    """Read and chunk each source (anything with ``.source`` and ``.read()``): its chunks, or why it was skipped.

    The in-process path; ``distributed.ray_engine.RayEmbedder.chunk_sources`` does the same on Ray Data workers."""
    out: dict[str, list[Chunk] | str] = {}
    for s in sources:
        try:
            out[s.source] = chunk_text(splitter, s.source, s.read()) or NO_TEXT
        except SkipFile as reason:
            out[s.source] = str(reason)
    return out


# --- sentences ----------------------------------------------------------------------------------------------------


def sentences_of(text: str, min_words: int = 1) -> list[str]:
    """The sentences of one text (Punkt), whitespace-normalised, those of fewer than ``min_words`` words dropped."""
    import nltk

    _punkt_path()
    sentences = (" ".join(s.split()) for s in nltk.tokenize.sent_tokenize(text))
    return [s for s in sentences if len(s.split()) >= min_words]


@functools.cache
def _punkt_path() -> None:
    """Point nltk at the Punkt model that llama-index-core ships (no download); once per process."""
    import llama_index.core
    import nltk

    cache = os.path.join(os.path.dirname(llama_index.core.__file__), "_static", "nltk_cache")
    if cache not in nltk.data.path:
        nltk.data.path.append(cache)
