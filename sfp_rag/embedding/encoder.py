"""``SFPEncoder``: text in, CSE-SFP embeddings out, with one forward pass per batch.

``encode`` takes a string or a list of strings and returns float32 numpy, ``(N, d)`` (or ``(d,)`` for one string),
L2-normalised by default. Inside it tokenizes everything once, sorts by length so batches carry little padding,
runs the backbone under ``inference_mode`` and puts the rows back in the caller's order.

Simplification: queries and documents use the same template; ``encode_queries``/``encode_documents`` exist so an
asymmetric template can be added without changing callers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils import (
    check_texts,
    progress_bar,
    quiet_third_party,
    require,
    require_regular_file,
    resolve_device,
    resolve_dtype,
)
from .backbones import BUILTIN_MODELS, load_backbone
from .config import (
    CONFIG_NAME,
    DEFAULT_MODEL_NAME,
    EncoderConfig,
    default_model_dir,
    load_encoder_config,
    save_config,
)
from .modeling import SFPModel
from .openvino_runtime import ConversionError, resolve_runtime
from .pooling import check_pooling, pool, pooled_dim
from .tokenization import PromptTokenizer

logger = logging.getLogger(__name__)

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


_GPU_BATCHES_PER_COPY = 32  # batches whose vectors wait on the GPU before one copy to the host


class SFPEncoder:
    """Embeds texts with a decoder-only LM and a two-stage prompt.

    Args:
        model: the backbone (``AutoModel``) or an ``SFPModel`` around it.
        tokenizer: its fast tokenizer.
        config: how the embeddings are made (template, pooling, normalisation, ...).
        device: where ``model`` lives (taken from its parameters when None).

    Example:
        >>> enc = SFPEncoder.from_pretrained("gemma3-270m")            # doctest: +SKIP
        >>> enc.encode(["A cat sits.", "A dog runs."]).shape           # doctest: +SKIP
        (2, 640)
    """

    def __init__(self, model: nn.Module, tokenizer, config: EncoderConfig | None = None, device: str | None = None):
        self.model = model if isinstance(model, SFPModel) else SFPModel(model)
        self.model.eval()
        self.tokenizer = tokenizer
        self.config = config or EncoderConfig()
        if device is None:  # where the weights are (an OpenVINO backbone has none here: it runs on the CPU)
            first = next(self.model.parameters(), None)
            device = str(first.device) if first is not None else "cpu"
        self.device = device
        self.prompt_tokenizer = self._make_prompter(self.config.template)
        query = self.config.query_template
        self.query_prompt_tokenizer = self.prompt_tokenizer if query is None else self._make_prompter(query)

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, model: str | Path | None = None, fast_tokenizer: bool = False, **overrides: Any
    ) -> SFPEncoder:
        """Build an encoder from a built-in name, a model path or hub id, or a trained adapter directory.

        Args:
            model: a built-in backbone name (``sfp_rag.backbones.BUILTIN_MODELS``), a .gguf file, a model directory,
                a hub id, or a directory with ``sfp_config.json`` (a trained adapter). None: the default.
            fast_tokenizer: load the bare Rust tokenizer (faster start; see ``tokenization.RustTokenizer``).
            **overrides: any ``EncoderConfig`` field (``adapter``, ``template``, ``pooling``, ``device``, ...).
        """
        config = resolve_config(model, **overrides)
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        if config.adapter:
            check_adapter_dir(config.adapter)
        if resolve_runtime(config.runtime, device, config.load_in_4bit) == "openvino":
            try:
                return cls._from_openvino(config, dtype, fast_tokenizer)
            except ConversionError as err:
                if config.runtime == "openvino":
                    raise
                logger.warning("%s; running it with torch instead (--runtime torch skips the attempt)", err)
        merge = bool(config.adapter) and not config.load_in_4bit
        weights = merged_weights(config, dtype) if merge and dtype != torch.float32 else None
        backbone, tokenizer = load_backbone(
            config.model,
            device=device,
            dtype=dtype if weights or not merge else torch.float32,  # a merge is done in fp32, then cast
            load_in_4bit=config.load_in_4bit,
            fast_tokenizer=fast_tokenizer,
            weights_from=weights,
        )
        if config.adapter and weights is None:
            backbone = attach_adapter(backbone, config.adapter, merge=merge)
            if merge and dtype != torch.float32:
                backbone = backbone.to(dtype)
        logger.debug("loaded %s (adapter=%s) on %s as %s", config.model, config.adapter, device, dtype)
        return cls(backbone, tokenizer, config, device=device)

    @classmethod
    def _from_openvino(cls, config: EncoderConfig, dtype, fast_tokenizer: bool) -> SFPEncoder:
        from .backbones import load_fast_tokenizer, load_tokenizer, resolve_model_dir
        from .openvino_runtime import load_openvino_backbone

        def merged_fp32() -> nn.Module:  # what is converted: the backbone with the adapter merged, in fp32
            backbone, _ = load_backbone(config.model, device="cpu", dtype=torch.float32)
            return attach_adapter(backbone, config.adapter, merge=True) if config.adapter else backbone

        backbone = load_openvino_backbone(config.model, _adapter_digest(config.adapter), dtype, merged_fp32)
        model_dir = Path(resolve_model_dir(config.model))
        tokenizer = load_fast_tokenizer(model_dir) if fast_tokenizer and model_dir.is_dir() else None
        return cls(backbone, tokenizer or load_tokenizer(config.model), config, device="cpu")

    @property
    def runtime(self) -> dict[str, str]:
        """What runs the backbone: ``{"runtime": "torch", "dtype": "bfloat16"}`` or ``{"runtime": "openvino",
        "precision": "bf16", "version": ...}`` (an index records it; it is not part of the vectors' identity)."""
        backbone = self.model.backbone
        if getattr(backbone, "runtime", None) == "openvino":
            return {"runtime": "openvino", "precision": backbone.precision, "version": backbone.version}
        dtype = next((p.dtype for p in self.model.parameters()), torch.float32)
        return {"runtime": "torch", "dtype": str(dtype).replace("torch.", "")}

    # --- encoding ---------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return pooled_dim(self.model.hidden_size, self.config.pooling)

    def encode(
        self,
        sentences: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | None = None,
        normalize_embeddings: bool | None = None,
        *,
        max_batch_tokens: int | None = None,
        pooling: str | None = None,
        **kwargs: Any,
    ) -> np.ndarray | torch.Tensor | list[torch.Tensor]:
        """Embed ``sentences``: float32 ``(N, d)``, or ``(d,)`` for a single string.

        The signature is sentence-transformers' ``encode``, so code written against it (MTEB's model interface, for
        one) runs unchanged.

        Args:
            sentences: a string or a sequence of strings (empty strings are embedded with an empty slot).
            prompt_name: ``"query"`` or ``"document"`` (also ``"passage"``, ``"corpus"``, ``"text"``): which role's
                template to use (see ``prompts``); None: the document template.
            prompt: a template string with ``{text}`` to use instead of the configured one (two-stage templates mark
                Rep1 with ``{rep1}``).
            batch_size: rows per forward pass at most.
            show_progress_bar: None shows one when this module logs at INFO, there are many texts and stderr is a
                terminal.
            convert_to_numpy: return a numpy array (the default); False returns a list of tensors.
            convert_to_tensor: return one torch tensor (overrides ``convert_to_numpy``).
            device: run on this device (the model is moved there).
            normalize_embeddings: override the configured L2 normalisation (None: as configured, on by default).
            max_batch_tokens: padded tokens per forward pass at most (None: only ``batch_size`` limits).
            pooling: override the configured pooling (rep2, rep1, mean, concat).
            **kwargs: ``task_name`` and ``prompt_type`` (MTEB's names; ``prompt_type`` acts as ``prompt_name``) are
                accepted; anything else is a ``TypeError``.
        """
        prompt_type = kwargs.pop("prompt_type", None)
        kwargs.pop("task_name", None)
        if kwargs:
            raise TypeError(f"encode() got unexpected keyword arguments {sorted(kwargs)}")
        role = _role(prompt_name if prompt_name is not None else getattr(prompt_type, "value", prompt_type))
        if device is not None:
            self.to(device)
        single = isinstance(sentences, str)
        items = check_texts(sentences)
        mode = check_pooling(pooling or self.config.pooling)
        normalize = self.config.normalize_embeddings if normalize_embeddings is None else normalize_embeddings
        out = self._encode(items, self._prompter(role, prompt), mode, normalize, batch_size, max_batch_tokens,
                           show_progress_bar)  # fmt: skip
        result = out[0] if single else out
        if convert_to_tensor:
            return torch.from_numpy(result)
        if not convert_to_numpy:
            return list(torch.from_numpy(out)) if not single else torch.from_numpy(result)
        return result

    def _encode(self, items, prompter, mode, normalize, batch_size, max_batch_tokens, show_progress_bar) -> np.ndarray:
        if not items:
            return np.zeros((0, pooled_dim(self.model.hidden_size, mode)), dtype=np.float32)
        empty = sum(1 for t in items if not t.strip())
        if empty:
            logger.warning(
                "%d of %d texts are empty or whitespace; they are embedded with an empty slot", empty, len(items)
            )
        prompts = prompter.tokenize(items)
        batches = plan_batches([len(p.input_ids) for p in prompts], batch_size, max_batch_tokens)
        out = np.empty((len(items), pooled_dim(self.model.hidden_size, mode)), dtype=np.float32)
        if show_progress_bar is None and len(items) < 256:
            show_progress_bar = False  # a few texts: a bar would only flicker
        progress = progress_bar(len(items), "encode", "text", show_progress_bar, logger)
        # On a GPU nothing waits for a batch: inputs go from page-locked memory without blocking, the next batch is
        # tokenized and collated while this one runs, and the vectors stay on the device until a group of batches
        # is copied back in one transfer.
        on_gpu = str(self.device).startswith("cuda")
        pending: list[tuple[list[int], torch.Tensor]] = []

        def flush() -> None:
            order = [i for rows, _ in pending for i in rows]
            out[order] = torch.cat([emb for _, emb in pending]).cpu().numpy()
            pending.clear()

        with torch.inference_mode():
            for rows in batches:
                batch = prompter.collate([prompts[i] for i in rows])
                batch = batch.pin_memory().to(self.device) if on_gpu else batch.to(self.device)
                reps = self.model(batch)
                emb = pool(reps.rep1, reps.rep2, mode).float()  # (b, d)
                if normalize:
                    emb = F.normalize(emb, dim=-1)
                if on_gpu:
                    pending.append((rows, emb))
                    if len(pending) == _GPU_BATCHES_PER_COPY:
                        flush()
                else:
                    out[rows] = emb.cpu().numpy()  # no copy on the CPU; other devices (mps, xpu) copy here
                progress.update(len(rows))
            if pending:
                flush()
        progress.close()
        return out

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

    def similarity(self, a: Any, b: Any) -> torch.Tensor:
        """Cosine similarity matrix ``(len(a), len(b))`` between two sets of embeddings (arrays, tensors or lists)."""
        a = torch.as_tensor(np.asarray(a, dtype=np.float32))
        b = torch.as_tensor(np.asarray(b, dtype=np.float32))
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T

    def to(self, device: str) -> SFPEncoder:
        """Move the model to ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...)."""
        device = resolve_device(device)
        if device != self.device:
            self.model.to(device)
            self.device = device
        return self

    # --- identity and saving ----------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What determines the vectors: an index built with one identity must be queried with the same one."""
        identity = self._document_identity()
        if self.query_prompt_tokenizer is not self.prompt_tokenizer:  # absent when symmetric: older indexes match
            identity["query_template"] = self.query_prompt_tokenizer.template.template
        return identity

    def _document_identity(self) -> dict[str, Any]:
        c = self.config
        return {
            "model": c.model,
            "adapter": Path(c.adapter).name if c.adapter else None,  # the digest identifies it; paths vary by machine
            "adapter_sha256": _adapter_digest(c.adapter),
            "template": self.prompt_tokenizer.template.template,
            "pooling": c.pooling,
            "max_text_tokens": c.max_text_tokens,
            "normalize_text": c.normalize_text,
            "normalize_embeddings": c.normalize_embeddings,
            "dim": self.dim,
        }

    def probe_ids(self) -> list[int]:
        """Token ids of a fixed probe prompt: equal ids mean two tokenizers agree (checked when an index is opened)."""
        return list(self.prompt_tokenizer.tokenize([PROBE_TEXT])[0].input_ids)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def document_fingerprint(self) -> str:
        """The fingerprint of the document vectors alone (the query template does not change them): caches of
        document embeddings are keyed on it."""
        return hashlib.sha256(json.dumps(self._document_identity(), sort_keys=True).encode()).hexdigest()[:16]

    def save_config(self, directory: str | Path) -> Path:
        return save_config(Path(directory), self.config)

    def __repr__(self) -> str:
        c = self.config
        query = f"query_template={self.query_prompt_tokenizer.template.name!r}, " if c.query_template else ""
        return (
            f"SFPEncoder(model={c.model!r}, adapter={c.adapter!r}, template={self.prompt_tokenizer.template.name!r}, "
            f"{query}"
            f"pooling={c.pooling!r}, dim={self.dim}, device={self.device!r}, dtype={c.dtype!r}, "
            f"runtime={self.runtime['runtime']!r})"
        )


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


def attach_adapter(backbone: nn.Module, adapter: str | Path, merge: bool = True) -> nn.Module:
    """Load a PEFT adapter onto ``backbone``; merge it into the weights for inference when possible."""
    require("peft", "Loading an adapter", "pip install peft")
    with quiet_third_party():  # peft imports bitsandbytes, which has notices of its own on CPU
        from peft import PeftModel

    path = check_adapter_dir(adapter)
    model = PeftModel.from_pretrained(backbone, str(path))
    return model.merge_and_unload() if merge else model


def merged_weights(config: EncoderConfig, dtype) -> Path:
    """A cached copy of the backbone with ``config.adapter`` merged in, in ``dtype``: later loads read it directly
    (0.2 s for Gemma-3-270M in bf16) instead of loading fp32 weights, merging and casting (about 1.5 s)."""
    import torch
    from filelock import FileLock

    from .._utils import cache_dir
    from .backbones import model_digest, resolve_model_dir, save_weights

    dtype_name = str(dtype).replace("torch.", "")
    # keyed on content, not names: two backbones in folders of the same name must not share merged weights
    name = Path(resolve_model_dir(config.model)).name
    key = f"{name}-{model_digest(config.model)[:16]}-{_adapter_digest(config.adapter)}-{dtype_name}"
    target = cache_dir() / "merged" / key
    if (target / "sfp_source.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "sfp_source.json").exists():
            backbone, _ = load_backbone(config.model, device="cpu", dtype=torch.float32)
            backbone = attach_adapter(backbone, config.adapter, merge=True).to(dtype)
            save_weights(backbone, target, {"model": config.model, "adapter": config.adapter, "dtype": dtype_name})
    return target


def _adapter_digest(adapter: str | None) -> str | None:
    if not adapter:
        return None
    h = hashlib.sha256()
    for name in _ADAPTER_WEIGHTS:
        p = Path(adapter) / name
        if p.exists():
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            return h.hexdigest()[:16]
    return None
