"""sfp_rag: LLM sentence embeddings trained with CSE-SFP (one forward pass, two views), for retrieval.

The public names are resolved lazily, so ``import sfp_rag`` does not import torch, transformers or LlamaIndex until
one of them is used. The package is laid out by role, and imports run one way (each layer may import only those
below it; ``tests/test_layout.py`` enforces it):

    _utils        helpers with no sfp_rag imports
    hits          Hit, one search result (local or from a server)
    client        the HTTP client of `sfp-rag serve` (httpx only; imports no torch)
    embedding     text -> prompt -> tokens -> model -> Rep1/Rep2 -> vectors (SFPEncoder)
    retrieval     documents, chunks, FAISS/BM25 indexes, fusion, build_index, Searcher, Index
    evaluation    STS, BEIR, semantic space, reference encoders, report
    training      losses, training data, the loop, checkpoints (uses evaluation for dev checks)
    integrations  LlamaIndex (embedding model, retriever, citation answering)
    serving       the HTTP service (`sfp-rag serve`)
    cli           the ``sfp-rag`` command, a thin layer over all of the above
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SFPEncoder": "embedding.encoder",
    "EncoderConfig": "embedding.config",
    "PromptTemplate": "embedding.prompts",
    "PRESETS": "embedding.prompts",
    "get_template": "embedding.prompts",
    "normalize_sentence": "embedding.prompts",
    "PromptTokenizer": "embedding.tokenization",
    "PromptBatch": "embedding.tokenization",
    "SFPModel": "embedding.modeling",
    "SFPOutput": "embedding.modeling",
    "info_nce": "training.losses",
    "InfoNCELoss": "training.losses",
    "TrainConfig": "training.config",
    "train": "training.trainer",
    "FaissIndex": "retrieval.faiss_index",
    "build_index": "retrieval.builder",
    "Index": "retrieval.index",
    "Hit": "hits",
    "SFPClient": "client",
    "Searcher": "retrieval.searcher",
    "search": "retrieval.searcher",
    "SFPEmbedding": "integrations.llamaindex",
    "SFPIndexRetriever": "integrations.llamaindex",
    "evaluate_sts": "evaluation.sts",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sfp_rag' has no attribute {name!r}")
