"""``SFPEncoder``: text in, CSE-SFP embeddings out, with one forward pass per batch.

``encode`` takes a string or a list of strings and returns float32 numpy, ``(N, d)`` (or ``(d,)`` for one string),
L2-normalised by default. Inside it tokenizes everything once, sorts by length so batches carry little padding,
runs the backbone under ``inference_mode`` and puts the rows back in the caller's order.

Queries and documents have a template each (``query_template``; the same one when it is None). Roles, prompts
and the identity an index records live in ``base.BaseEncoder``, which the torch-free ``OpenVINOEncoder`` shares.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils import progress_bar, quiet_third_party, require, resolve_device, resolve_dtype
from .backbones import load_backbone
from .base import (  # noqa: F401  (resolve_config, check_adapter_dir, plan_batches: imported from here too)
    BaseEncoder,
    adapter_digest,
    check_adapter_dir,
    plan_batches,
    resolve_config,
)
from .config import EncoderConfig
from .modeling import SFPModel
from .openvino_runtime import ConversionError, resolve_runtime
from .pooling import pool

logger = logging.getLogger(__name__)

_GPU_BATCHES_PER_COPY = 32  # batches whose vectors wait on the GPU before one copy to the host


class SFPEncoder(BaseEncoder):
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
        self._init_prompters()

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
        from .openvino_backbone import load_openvino_backbone

        def merged_fp32() -> nn.Module:  # what is converted: the backbone with the adapter merged, in fp32
            backbone, _ = load_backbone(config.model, device="cpu", dtype=torch.float32)
            return attach_adapter(backbone, config.adapter, merge=True) if config.adapter else backbone

        backbone = load_openvino_backbone(config.model, adapter_digest(config.adapter), dtype, merged_fp32)
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
    def hidden_size(self) -> int:
        return self.model.hidden_size

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
        truncate_dim: int | None = None,
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
            truncate_dim: N dimensions of each vector, then normalised (sentence-transformers' name; None: the
                config's ``truncate_dim``, by default all): the first N, or where the model's folder holds a
                ``rotation.npy`` (``embedding.rotation``; the shipped default does) its first N principal directions.
            **kwargs: ``task_name`` and ``prompt_type`` (MTEB's names; ``prompt_type`` acts as ``prompt_name``) are
                accepted; anything else is a ``TypeError``.
        """
        single, items, prompter, mode, normalize, width = self._prepare(
            sentences, prompt_name, prompt, pooling, normalize_embeddings, truncate_dim, kwargs
        )
        if device is not None:
            self.to(device)
        out = self._encode(items, prompter, mode, normalize, width, batch_size, max_batch_tokens, show_progress_bar)
        result = out[0] if single else out
        if convert_to_tensor:
            return torch.from_numpy(result)
        if not convert_to_numpy:
            return list(torch.from_numpy(out)) if not single else torch.from_numpy(result)
        return result

    def _encode(
        self, items, prompter, mode, normalize, width, batch_size, max_batch_tokens, show_progress
    ) -> np.ndarray:
        if not items:
            return np.zeros((0, width), dtype=np.float32)
        self._warn_empty(items)
        prompts = prompter.tokenize(items)
        batches = plan_batches([len(p.input_ids) for p in prompts], batch_size, max_batch_tokens)
        out = np.empty((len(items), width), dtype=np.float32)
        if show_progress is None and len(items) < 256:
            show_progress = False  # a few texts: a bar would only flicker
        progress = progress_bar(len(items), "encode", "text", show_progress, logger)
        # On a GPU nothing waits for a batch: inputs go from page-locked memory without blocking, the next batch is
        # tokenized and collated while this one runs, and the vectors stay on the device until a group of batches
        # is copied back in one transfer.
        on_gpu = str(self.device).startswith("cuda")
        cut = self._cut_matrix(mode, width)  # the principal directions to cut onto (None: a plain prefix)
        if cut is not None:
            cut = torch.from_numpy(cut).to(self.device)
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
                emb = emb @ cut if cut is not None else emb[:, :width]  # (b, width)
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

    # --- sentence-transformers compatibility --------------------------------------------------------------

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
    key = f"{name}-{model_digest(config.model)[:16]}-{adapter_digest(config.adapter)}-{dtype_name}"
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
