"""``OpenVINOEncoder``: an already converted model run by OpenVINO, with numpy around it and no torch.

A cold ``sfp-rag query`` spent more time importing torch (about 1 s) than embedding its query (0.1 s). Where the
index's model runs on OpenVINO and its conversion is in the cache, the searcher embeds with this class instead of
``SFPEncoder``: the same compiled model, prompts and tokenizer, with the collate and the pooling in numpy, so the
same vectors (``tests/test_openvino_encoder.py`` compares them), and torch is never imported. Everything else
(converting, building indexes, serving, training, GPUs) goes through ``SFPEncoder``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import progress_bar
from .base import BaseEncoder, adapter_digest, check_adapter_dir, plan_batches, resolve_config
from .config import EncoderConfig
from .openvino_runtime import CompiledModel, converted_model_dir, precision_name
from .pooling import normalize_numpy, pool_numpy

logger = logging.getLogger(__name__)


class OpenVINOEncoder(BaseEncoder):
    """Embeds texts as ``SFPEncoder`` with ``runtime="openvino"`` does, without importing torch.

    Args:
        compiled: the converted model, compiled (``openvino_runtime.CompiledModel``).
        tokenizer: its fast tokenizer (``tokenization.RustTokenizer`` or a transformers one).
        config: how the embeddings are made (the same config ``SFPEncoder`` takes).
    """

    device = "cpu"

    def __init__(self, compiled: CompiledModel, tokenizer, config: EncoderConfig) -> None:
        self.compiled = compiled
        self.tokenizer = tokenizer
        self.config = config
        self._init_prompters()

    @classmethod
    def from_cache(cls, model: str | Path | None = None, **overrides: Any) -> OpenVINOEncoder | None:
        """The encoder ``SFPEncoder.from_pretrained(model, **overrides)`` would build on OpenVINO, when it can be
        built without torch: the runtime is ``auto`` or ``openvino``, the device the CPU, the weights not 4-bit,
        OpenVINO installed and the model (with its adapter) converted already. Otherwise None, and the caller
        builds an ``SFPEncoder`` (which converts a model on first use)."""
        config = resolve_config(model, **overrides)
        if config.runtime == "torch" or config.load_in_4bit or not _device_is_cpu(config.device):
            return None
        if config.adapter:
            check_adapter_dir(config.adapter)
        folder = converted_model_dir(config.model, adapter_digest(config.adapter))
        if folder is None:
            return None
        from .backbones import load_fast_tokenizer, resolve_model_dir

        tokenizer = load_fast_tokenizer(resolve_model_dir(config.model))
        if tokenizer is None:  # no tokenizer.json: only transformers can load it, and it imports torch
            return None
        return cls(CompiledModel(folder, precision_name(config.dtype)), tokenizer, config)

    @property
    def hidden_size(self) -> int:
        return self.compiled.hidden_size

    @property
    def runtime(self) -> dict[str, str]:
        """As ``SFPEncoder.runtime``: ``{"runtime": "openvino", "precision": ..., "version": ...}``."""
        return {"runtime": "openvino", "precision": self.compiled.precision, "version": self.compiled.version}

    def encode(
        self,
        sentences: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool | None = None,
        *,
        max_batch_tokens: int | None = None,
        pooling: str | None = None,
        truncate_dim: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed ``sentences``: float32 ``(N, d)``, or ``(d,)`` for a single string; the arguments mean what they
        mean in ``SFPEncoder.encode`` (which also converts to torch tensors and moves devices: this class does not)."""
        single, items, prompter, mode, normalize, width = self._prepare(
            sentences, prompt_name, prompt, pooling, normalize_embeddings, truncate_dim, kwargs
        )
        if not items:
            return np.zeros((0, width), dtype=np.float32)
        self._warn_empty(items)
        prompts = prompter.tokenize(items)
        batches = plan_batches([len(p.input_ids) for p in prompts], batch_size, max_batch_tokens)
        out = np.empty((len(items), width), dtype=np.float32)
        if show_progress_bar is None and len(items) < 256:
            show_progress_bar = False
        progress = progress_bar(len(items), "encode", "text", show_progress_bar, logger)
        cut = self._cut_matrix(mode, width)  # the principal directions to cut onto (None: a plain prefix)
        for rows in batches:
            ids, _, rep1, rep2 = prompter.collate_arrays([prompts[i] for i in rows])  # right-padded: no mask
            hidden = self.compiled.infer(ids)  # (b, L, D)
            at = np.arange(len(rows))
            emb = pool_numpy(hidden[at, rep1], hidden[at, rep2], mode)  # (b, d)
            emb = emb @ cut if cut is not None else emb[:, :width]  # (b, width)
            out[rows] = normalize_numpy(emb) if normalize else emb
            progress.update(len(rows))
        progress.close()
        return out[0] if single else out

    def similarity(self, a: Any, b: Any) -> np.ndarray:
        """Cosine similarity matrix ``(len(a), len(b))`` (numpy; ``SFPEncoder.similarity`` returns a tensor)."""
        a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        return normalize_numpy(a) @ normalize_numpy(b).T

    def __repr__(self) -> str:
        c, template = self.config, self.prompt_tokenizer.template.name
        return (
            f"OpenVINOEncoder(model={c.model!r}, adapter={c.adapter!r}, template={template!r}, pooling={c.pooling!r}, "
            f"dim={self.dim}, precision={self.compiled.precision!r})"
        )


def _device_is_cpu(device: str) -> bool:
    """Whether ``device`` resolves to the CPU, told without importing torch: ``cpu``, or ``auto`` on Linux with no
    NVIDIA or ROCm device node (where torch could see no GPU). Anything else is left to ``SFPEncoder``."""
    if device == "cpu":
        return True
    if device != "auto" or not sys.platform.startswith("linux"):
        return False
    return not any(Path(node).exists() for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))
