"""What every sfp_rag encoder shares, without torch: roles and their prompts, batching plans, the identity an
index records, and the resolution of a model name into an ``EncoderConfig``.

Two encoders build on it: ``SFPEncoder`` (``encoder.py``, PyTorch, or OpenVINO through a torch module) and
``OpenVINOEncoder`` (``openvino_encoder.py``, numpy around an OpenVINO model already converted), which a cold search
uses so that answering one query never imports torch. Both give the same vectors for the same config; what makes
them is in their ``encode``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import check_texts, require_regular_file
from .backbones import BUILTIN_MODELS, file_digest
from .config import CONFIG_NAME, DEFAULT_MODEL_NAME, EncoderConfig, default_model_dir, load_encoder_config, save_config
from .pooling import check_pooling, normalize_numpy, pooled_dim
from .rotation import load_rotation
from .tokenization import PromptTokenizer

logger = logging.getLogger("sfp_rag.embedding.encoder")  # the name users filter on, whichever encoder logs
PROBE_TEXT = 'Probe: "Héllo", wörld — 42 naïve café tokens?  €5 日本語 😀'


ROLES = {"query": "query", "document": "document", "passage": "document", "corpus": "document", "text": "document"}


def _role(name: str | None) -> str:
    if name is None:
        return "document"
    if name not in ROLES:
        raise ValueError(f"prompt_name must be one of {sorted(ROLES)} or None, got {name!r}")
    return ROLES[name]


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Group row indices into batches, longest first: at most ``batch_size`` rows and, when given,
    at most ``max_batch_tokens`` padded tokens (rows x longest row) per batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        full = len(current) >= batch_size or (
            max_batch_tokens is not None and current and (len(current) + 1) * longest > max_batch_tokens
        )
        if full:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class BaseEncoder:
    """The torch-free half of an encoder. Subclasses set ``config`` and ``tokenizer``, call ``_init_prompters()``,
    and implement ``hidden_size`` and ``encode``."""

    config: EncoderConfig
    tokenizer: Any

    def _init_prompters(self) -> None:
        self.prompt_tokenizer = self._make_prompter(self.config.template)
        query = self.config.query_template
        self.query_prompt_tokenizer = self.prompt_tokenizer if query is None else self._make_prompter(query)

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """The width of the vectors ``encode`` returns (``truncate_dim`` when the config sets one)."""
        return self._width(self.config.pooling, self.config.truncate_dim)

    @property
    def full_dim(self) -> int:
        """The width of the pooled vectors before any ``truncate_dim``."""
        return pooled_dim(self.hidden_size, self.config.pooling)

    def truncate_vectors(self, vectors: np.ndarray, width: int | None = None) -> np.ndarray:
        """This encoder's vectors (N, D) as ``encode`` returns them at ``width`` dimensions (None: the config's
        ``truncate_dim``): rotated onto the model's principal directions where it has a ``rotation.npy`` (full-width
        vectors only; narrower ones are rotated already), cut, and renormalised where the config normalises."""
        v = np.asarray(vectors, dtype=np.float32)
        width = self.dim if width is None else width
        if width >= v.shape[1]:
            return v
        rotation = self.rotation if v.shape[1] == self.full_dim else None
        v = v @ rotation[:, :width] if rotation is not None else v[:, :width]
        return normalize_numpy(v) if self.config.normalize_embeddings else v

    @property
    def rotation(self) -> np.ndarray | None:
        """The model's principal directions (``rotation.npy`` in its adapter folder; see ``rotation``), which vectors
        cut below the full width are rotated onto first; None: cut as they are."""
        if not hasattr(self, "_rotation"):
            self._rotation = load_rotation(self.config.adapter, self.full_dim)
        return self._rotation[0]

    def _cut_matrix(self, mode: str, width: int) -> np.ndarray | None:
        """What ``encode`` multiplies pooled vectors by to cut them to ``width``: the first ``width`` principal
        directions, or None (a plain prefix, or the full width)."""
        full = pooled_dim(self.hidden_size, mode)
        if width >= full or self.rotation is None or self.rotation.shape[0] != full:
            return None
        return self.rotation[:, :width]

    def _width(self, mode: str, truncate_dim: int | None) -> int:
        full = pooled_dim(self.hidden_size, mode)
        if truncate_dim is None:
            return full
        if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or not 1 <= truncate_dim <= full:
            raise ValueError(
                f"truncate_dim must be an integer from 1 to the vectors' width {full}, got {truncate_dim!r}"
            )
        return truncate_dim

    def _prepare(self, sentences, prompt_name, prompt, pooling, normalize_embeddings, truncate_dim, kwargs):
        """The arguments ``encode`` shares: ``(single, texts, prompt tokenizer, pooling mode, normalize, width)``;
        ``width`` is how many dimensions each pooled vector is cut to (``_cut_matrix``), before normalising."""
        prompt_type = kwargs.pop("prompt_type", None)
        kwargs.pop("task_name", None)
        if kwargs:
            raise TypeError(f"encode() got unexpected keyword arguments {sorted(kwargs)}")
        role = _role(prompt_name if prompt_name is not None else getattr(prompt_type, "value", prompt_type))
        mode = check_pooling(pooling or self.config.pooling)
        normalize = self.config.normalize_embeddings if normalize_embeddings is None else normalize_embeddings
        width = self._width(mode, self.config.truncate_dim if truncate_dim is None else truncate_dim)
        return isinstance(sentences, str), check_texts(sentences), self._prompter(role, prompt), mode, normalize, width

    def encode(self, sentences: str | Sequence[str], **kwargs: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def _warn_empty(items: list[str]) -> None:
        empty = sum(1 for t in items if not t.strip())
        if empty:
            logger.warning(
                "%d of %d texts are empty or whitespace; they are embedded with an empty slot", empty, len(items)
            )

    def _make_prompter(self, template: str) -> PromptTokenizer:
        return PromptTokenizer(
            self.tokenizer,
            template,
            max_text_tokens=self.config.max_text_tokens,
            normalize_text=self.config.normalize_text,
        )

    def _prompter(self, role: str, prompt: str | None) -> PromptTokenizer:
        """The prompt tokenizer for a role (queries use ``query_template`` when one is set), or for an explicit
        template string."""
        if prompt is not None:
            return self._make_prompter(prompt)
        return self.query_prompt_tokenizer if role == "query" else self.prompt_tokenizer

    def encode_queries(self, queries: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        """Embed search queries."""
        return self.encode(queries, prompt_name="query", **kwargs)

    def encode_documents(self, documents: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        """Embed documents or chunks to be searched."""
        return self.encode(documents, prompt_name="document", **kwargs)

    encode_query = encode_queries  # sentence-transformers' names
    encode_document = encode_documents

    # --- sentence-transformers compatibility --------------------------------------------------------------

    similarity_fn_name = "cosine"

    @property
    def prompts(self) -> dict[str, str]:
        """The template of each role, as sentence-transformers' ``prompts`` (``{text}`` marks the text slot)."""
        return {
            "query": self.query_prompt_tokenizer.template.template,
            "document": self.prompt_tokenizer.template.template,
        }

    @property
    def max_seq_length(self) -> int | None:
        """Tokens of text kept per input (the prompt around it is extra)."""
        return self.config.max_text_tokens

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    # --- identity and saving ----------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What determines the vectors: an index built with one identity must be queried with the same one."""
        identity = self._document_identity()
        if self.query_prompt_tokenizer is not self.prompt_tokenizer:  # absent when symmetric: older indexes match
            identity["query_template"] = self.query_prompt_tokenizer.template.template
        return identity

    def _document_identity(self, full_width: bool = False) -> dict[str, Any]:
        c = self.config
        truncated = c.truncate_dim is not None and not full_width
        rotated = truncated and c.truncate_dim < self.full_dim and self.rotation is not None
        return {
            "model": c.model,
            "adapter": Path(c.adapter).name if c.adapter else None,  # the digest identifies it; paths vary by machine
            "adapter_sha256": adapter_digest(c.adapter),
            "template": self.prompt_tokenizer.template.template,
            "pooling": c.pooling,
            "max_text_tokens": c.max_text_tokens,
            "normalize_text": c.normalize_text,
            "normalize_embeddings": c.normalize_embeddings,
            "dim": self.dim if not full_width else self.full_dim,
            **({"truncate_dim": c.truncate_dim} if truncated else {}),  # absent when not set: older indexes match
            **({"rotation_sha256": self._rotation[1]} if rotated else {}),
        }

    def probe_ids(self) -> list[int]:
        """Token ids of a fixed probe prompt: equal ids mean two tokenizers agree (checked when an index is opened)."""
        return list(self.prompt_tokenizer.tokenize([PROBE_TEXT])[0].input_ids)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def document_fingerprint(self, full_width: bool = False) -> str:
        """The fingerprint of the document vectors alone (the query template does not change them): caches of
        document embeddings are keyed on it. ``full_width``: that of the vectors before ``truncate_dim`` (the same
        as the untruncated encoder's), whose cache ``truncate_vectors`` cuts."""
        identity = self._document_identity(full_width)
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def save_config(self, directory: str | Path) -> Path:
        return save_config(Path(directory), self.config)


# --- helpers ------------------------------------------------------------------------------------------------


def resolve_config(model: str | Path | None = None, **overrides: Any) -> EncoderConfig:
    """The ``EncoderConfig`` that ``from_pretrained(model, **overrides)`` builds from; local paths (model and
    adapter) are made absolute, so that what an index records works from any directory."""
    config = _resolve_config(model, **overrides)
    if config.adapter and Path(config.adapter).expanduser().exists():
        config.adapter = str(Path(config.adapter).expanduser().resolve())
    return config


def _resolve_config(model: str | Path | None = None, **overrides: Any) -> EncoderConfig:
    if model is None or model == DEFAULT_MODEL_NAME:
        shipped = default_model_dir()
        if shipped is not None:
            return load_encoder_config(shipped).replace(**overrides)
        if model == DEFAULT_MODEL_NAME:
            raise FileNotFoundError(f"this install has no {DEFAULT_MODEL_NAME} adapter (reinstall sfp-rag)")
        return EncoderConfig(**overrides)
    if Path(model).is_dir() and (Path(model) / CONFIG_NAME).exists():
        return load_encoder_config(Path(model)).replace(**overrides)
    overrides["model"] = _canonical_model(str(model))
    return EncoderConfig(**overrides)


def _canonical_model(model: str) -> str:
    """Built-in names and hub ids as given; local paths made absolute so identities compare."""
    if model in BUILTIN_MODELS or not Path(model).expanduser().exists():
        return model
    return str(Path(model).expanduser().resolve())


_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_adapter_dir(adapter: str | Path) -> Path:
    """``adapter`` as a Path, or ``FileNotFoundError`` saying what a PEFT adapter folder lacks (PEFT itself would
    take a local folder without weights for a hub id and fail with a message about repository names)."""
    path = Path(adapter).expanduser()
    for part in ("adapter_config.json", *_ADAPTER_WEIGHTS):
        require_regular_file(path / part, "the adapter file")
    if not path.is_dir():
        raise FileNotFoundError(f"adapter {path} is not a folder; pass the directory `sfp-rag train` wrote")
    if not (path / "adapter_config.json").exists():
        raise FileNotFoundError(f"adapter {path} has no adapter_config.json; pass the directory `sfp-rag train` wrote")
    if not (path / _ADAPTER_WEIGHTS[0]).exists() and (path / _ADAPTER_WEIGHTS[1]).exists():
        raise ValueError(
            f"adapter {path} holds its weights as {_ADAPTER_WEIGHTS[1]}, a pickle file: refused, because loading a "
            f"pickle can run code; sfp-rag loads adapter weights only from {_ADAPTER_WEIGHTS[0]}. Where you trust "
            "the file, convert it with PEFT (load it, then save_pretrained(..., safe_serialization=True))"
        )
    if not any((path / name).exists() for name in _ADAPTER_WEIGHTS):
        raise FileNotFoundError(
            f"adapter {path} has adapter_config.json but no weights ({_ADAPTER_WEIGHTS[0]}): the folder is "
            "incomplete; copy it again from the run, or pass the run folder or one of its checkpoints/step-N"
        )
    return path


def adapter_digest(adapter: str | None) -> str | None:
    """The first 16 hex digits of the SHA-256 of an adapter's weights file (None without an adapter).

    Read through `backbones.file_digest`, which remembers a digest per (path, size, mtime, inode): opening an index
    and loading its encoder both ask, and a cold query would otherwise hash the file twice."""
    if not adapter:
        return None
    for name in _ADAPTER_WEIGHTS:
        p = Path(adapter) / name
        if p.exists():
            return file_digest(p)[:16]
    return None
