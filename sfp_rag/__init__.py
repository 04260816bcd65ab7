"""sfp_rag: LLM sentence embeddings trained with CSE-SFP (one forward pass, two views), for retrieval.

The public names are resolved lazily, so ``import sfp_rag`` does not import torch, transformers or LlamaIndex until
one of them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SFPEncoder": "encoder",
    "EncoderConfig": "config",
    "PromptTemplate": "prompts",
    "PRESETS": "prompts",
    "get_template": "prompts",
    "normalize_sentence": "prompts",
    "PromptTokenizer": "tokenization",
    "PromptBatch": "tokenization",
    "SFPModel": "modeling",
    "SFPOutput": "modeling",
    "info_nce": "losses",
    "InfoNCELoss": "losses",
    "TrainConfig": "training",
    "train": "training",
    "FaissIndex": "index",
    "build_index": "pipeline",
    "search": "pipeline",
    "SFPEmbedding": "llamaindex",
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
