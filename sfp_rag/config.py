"""Validated configuration dataclasses, saved as JSON next to the weights they describe.

``EncoderConfig`` says how to build an embedder: which backbone, which adapter, which template and pooling. A
trained adapter directory carries one as ``sfp_config.json`` (with the ``TrainConfig`` of its run), so
``SFPEncoder.from_pretrained(adapter_dir)`` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ._utils import DEVICES, atomic_write_json, normalize_dtype_name
from .pooling import check_pooling
from .prompts import get_template

logger = logging.getLogger(__name__)

CONFIG_NAME = "sfp_config.json"
DEFAULT_BACKBONE = "gemma3-270m"
DEFAULT_TEMPLATE = "eol-sum"
# The shipped default embedder: a CSE-SFP adapter for DEFAULT_BACKBONE (see its MODEL_CARD.md).
DEFAULT_MODEL_NAME = "sfp-gemma3-270m"
DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"


def default_model_dir() -> Path | None:
    """The packaged default adapter folder, or None if this install has none (then the bare backbone is used)."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / CONFIG_NAME).exists() else None


def _check_keys(cls, data: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")


@dataclass
class EncoderConfig:
    """How to build an embedder from a backbone."""

    model: str = field(default=DEFAULT_BACKBONE, metadata={"help": "built-in name, .gguf file, model dir or hub id"})
    adapter: str | None = field(default=None, metadata={"help": "PEFT (LoRA) adapter directory, merged at load"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "preset name or template string"})
    pooling: str = field(default="rep2", metadata={"help": "rep2 (paper), rep1, mean or concat of the two"})
    max_text_tokens: int | None = field(default=512, metadata={"help": "cut the text slot to this many tokens"})
    normalize_text: bool = field(default=True, metadata={"help": "the paper's sentence normalisation"})
    normalize_embeddings: bool = field(default=True, metadata={"help": "L2-normalise the output vectors"})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N or mps"})
    load_in_4bit: bool = field(default=False, metadata={"help": "4-bit NF4 weights through bitsandbytes"})

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        get_template(self.template)  # raises with the list of presets
        check_pooling(self.pooling)
        if self.max_text_tokens is not None and (
            not isinstance(self.max_text_tokens, int) or self.max_text_tokens < 1
        ):
            raise ValueError(f"max_text_tokens must be a positive integer or None, got {self.max_text_tokens!r}")
        self.dtype = normalize_dtype_name(self.dtype)
        if str(self.device).split(":")[0] not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'), got {self.device!r}")

    # --- (de)serialisation ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "encoder config") -> EncoderConfig:
        _check_keys(cls, data, where)
        return cls(**data)

    def replace(self, **changes: Any) -> EncoderConfig:
        _check_keys(type(self), changes, "EncoderConfig.replace")
        return dataclasses.replace(self, **changes)


def save_config(directory: Path, encoder: EncoderConfig, **sections: Any) -> Path:
    """Write ``sfp_config.json`` (the encoder section plus any extra sections, e.g. ``training``)."""
    path = Path(directory) / CONFIG_NAME
    atomic_write_json(path, {"encoder": encoder.to_dict(), **sections})
    return path


def read_config_file(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-save the model or fix the file") from err
    if not isinstance(data, dict) or "encoder" not in data:
        raise ValueError(f"{path} has no 'encoder' section; it was not written by sfp_rag")
    return data


def load_encoder_config(directory: Path) -> EncoderConfig:
    """Read the encoder section of ``directory/sfp_config.json``; the adapter is the directory itself when it holds
    adapter weights and the config names none."""
    directory = Path(directory)
    enc = dict(read_config_file(directory)["encoder"])
    if enc.get("adapter") is None and (directory / "adapter_config.json").exists():
        enc["adapter"] = str(directory)
    elif enc.get("adapter") and not Path(enc["adapter"]).is_absolute():
        enc["adapter"] = str((directory / enc["adapter"]).resolve())
    return EncoderConfig.from_dict(enc, where=str(directory / CONFIG_NAME))


# --- training -------------------------------------------------------------------------------------------------

OBJECTIVES = ("single-pass", "two-pass-dropout", "two-pass-prompts")
SCHEDULES = ("linear", "cosine", "constant")
QUANTIZATIONS = ("nf4", "none")
TRAIN_DTYPES = ("auto", "float32", "bfloat16")
_DEFAULT_TEMPLATES = {"single-pass": "eol-sum", "two-pass-dropout": "eol", "two-pass-prompts": "eol"}
INFERENCE_MAX_TEXT_TOKENS = 512  # the text slot at inference (training cuts at max_text_tokens)


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved with the adapter in ``sfp_config.json``."""

    data: str = field(metadata={"help": "training text: file, .gz, .jsonl, dataset, hf:NAME, docs or BEIR folder"})
    output_dir: str = field(metadata={"help": "where the adapter, checkpoints and log go"})
    model: str = DEFAULT_BACKBONE
    objective: str = "single-pass"
    template: str | None = field(default=None, metadata={"help": "default: eol-sum (single-pass), eol (two-pass)"})
    second_template: str = field(default="sum", metadata={"help": "the positive's template for two-pass-prompts"})
    pooling: str = field(default="rep2", metadata={"help": "pooling recorded for inference"})
    max_text_tokens: int = 32
    temperature: float = 0.05
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "linear"
    max_steps: int = 1000
    max_grad_norm: float = 1.0
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target: str = field(default="all-linear", metadata={"help": "'all-linear' or comma-separated module names"})
    quantization: str = field(default="nf4", metadata={"help": "nf4 (QLoRA) or none (plain LoRA)"})
    dtype: str = field(
        default="auto", metadata={"help": "compute: auto (bf16 autocast where fast), float32, bfloat16"}
    )
    dropout: float = field(default=0.1, metadata={"help": "attention dropout, two-pass-dropout only"})
    gradient_checkpointing: bool = False
    seed: int = 42
    save_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_every: int = 0
    eval_data: str | None = field(default=None, metadata={"help": "SentEval folder for STS-B dev checks"})
    select_best: bool = field(default=False, metadata={"help": "save the adapter with the best STS-B dev score"})
    device: str = "auto"
    text_field: str = "text"
    max_train_texts: int | None = None
    init_adapter: str | None = field(
        default=None, metadata={"help": "continue training this adapter (its rank is kept)"}
    )

    def __post_init__(self) -> None:
        trained = Path(self.model).expanduser()
        if (trained / CONFIG_NAME).exists():  # a trained adapter: train it further on its own backbone and prompt
            recorded = load_encoder_config(trained)
            self.init_adapter = self.init_adapter or str(trained.resolve())
            self.model = recorded.model
            self.template = self.template or recorded.template
            self.pooling = recorded.pooling
        if self.init_adapter:
            self._take_lora_settings(Path(self.init_adapter))
        for name, value, allowed in (
            ("objective", self.objective, OBJECTIVES),
            ("schedule", self.schedule, SCHEDULES),
            ("quantization", self.quantization, QUANTIZATIONS),
            ("dtype", self.dtype, TRAIN_DTYPES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.template is None:
            self.template = _DEFAULT_TEMPLATES[self.objective]
        template = get_template(self.template)
        if self.objective == "single-pass" and not template.two_stage:
            raise ValueError(
                f"single-pass training needs a two-stage template (with {{rep1}}), got {self.template!r}; "
                "use eol-sum, sth-sum or sth-also-sum"
            )
        if self.objective == "two-pass-prompts":
            get_template(self.second_template)
        for name in (
            "batch_size",
            "grad_accum",
            "max_steps",
            "lora_r",
            "lora_alpha",
            "max_text_tokens",
            "save_every",
            "log_every",
            "keep_checkpoints",
        ):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2: in-batch negatives need other rows")
        for name in ("lr", "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("lora_dropout", "dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.eval_every < 0:
            raise ValueError("warmup_steps and eval_every must be >= 0")
        if (self.eval_every or self.select_best) and not self.eval_data:
            raise ValueError("eval_every/select_best need eval_data (a SentEval folder with STS-B dev)")

    def _take_lora_settings(self, adapter: Path) -> None:
        """A continued adapter keeps its rank, alpha, dropout and target modules: record those, not the defaults."""
        try:
            peft_config = json.loads((adapter / "adapter_config.json").read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot continue from {adapter}: no readable adapter_config.json ({err})") from None
        self.lora_r = peft_config.get("r", self.lora_r)
        self.lora_alpha = peft_config.get("lora_alpha", self.lora_alpha)
        self.lora_dropout = peft_config.get("lora_dropout", self.lora_dropout)
        target = peft_config.get("target_modules")
        if isinstance(target, list):
            self.lora_target = ",".join(sorted(target))
        elif isinstance(target, str):
            self.lora_target = target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
