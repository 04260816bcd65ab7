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

from .._utils import DEVICES, atomic_write_json, normalize_dtype_name, require_regular_file
from .pooling import check_pooling
from .prompts import get_template

logger = logging.getLogger(__name__)

CONFIG_NAME = "sfp_config.json"
DEFAULT_BACKBONE = "gemma3-270m"
DEFAULT_TEMPLATE = "eol-sum"
# The shipped default embedder: a CSE-SFP adapter for DEFAULT_BACKBONE (see its MODEL_CARD.md).
DEFAULT_MODEL_NAME = "sfp-gemma3-270m"
RUNTIMES = ("auto", "torch", "openvino")  # what runs the backbone at inference (see openvino_runtime)
INFERENCE_MAX_TEXT_TOKENS = 512  # the text slot at inference (training cuts at its own max_text_tokens)
DEFAULT_MODEL_DIR = Path(__file__).parent.parent / "default_model"


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
    query_template: str | None = field(
        default=None, metadata={"help": "the queries' template (asymmetric search); None: the same as template"}
    )
    pooling: str = field(default="rep2", metadata={"help": "rep2 (paper), rep1, mean or concat of the two"})
    max_text_tokens: int | None = field(
        default=INFERENCE_MAX_TEXT_TOKENS, metadata={"help": "cut the text slot to this many tokens"}
    )
    normalize_text: bool = field(default=True, metadata={"help": "the paper's sentence normalisation"})
    normalize_embeddings: bool = field(default=True, metadata={"help": "L2-normalise the output vectors"})
    truncate_dim: int | None = field(
        default=None,
        metadata={"help": "N dimensions of each vector (the first N principal ones where the model has a rotation)"},
    )
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N or mps"})
    load_in_4bit: bool = field(default=False, metadata={"help": "4-bit NF4 weights through bitsandbytes"})
    runtime: str = field(
        default="auto", metadata={"help": "auto (OpenVINO on a CPU where installed, else torch), torch or openvino"}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        get_template(self.template)  # raises with the list of presets
        if self.query_template is not None:
            get_template(self.query_template)
        check_pooling(self.pooling)
        if self.max_text_tokens is not None and (
            not isinstance(self.max_text_tokens, int) or self.max_text_tokens < 1
        ):
            raise ValueError(f"max_text_tokens must be a positive integer or None, got {self.max_text_tokens!r}")
        if self.truncate_dim is not None and (
            isinstance(self.truncate_dim, bool) or not isinstance(self.truncate_dim, int) or self.truncate_dim < 1
        ):
            raise ValueError(f"truncate_dim must be a positive integer or None, got {self.truncate_dim!r}")
        self.dtype = normalize_dtype_name(self.dtype)
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
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


def display_name(config: EncoderConfig) -> str:
    """A short model name without this machine's paths: the shipped default's name, or folder names."""
    if config.adapter and Path(config.adapter).resolve() == DEFAULT_MODEL_DIR.resolve():
        return DEFAULT_MODEL_NAME
    name = Path(config.model).name if Path(config.model).is_absolute() else config.model
    return name + (f"+{Path(config.adapter).name}" if config.adapter else "")


def save_config(directory: Path, encoder: EncoderConfig, **sections: Any) -> Path:
    """Write ``sfp_config.json`` (the encoder section plus any extra sections, e.g. ``training``)."""
    path = Path(directory) / CONFIG_NAME
    atomic_write_json(path, {"encoder": encoder.to_dict(), **sections})
    return path


def read_config_file(directory: Path) -> dict[str, Any]:
    path = require_regular_file(Path(directory) / CONFIG_NAME, "the model config")
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
