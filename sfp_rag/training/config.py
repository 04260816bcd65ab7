"""``TrainConfig``: everything a training run depends on, validated, and saved with the adapter.

It lives beside the trainer it configures; the encoder section of the same ``sfp_config.json`` is the embedding
package's ``EncoderConfig``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..embedding.config import CONFIG_NAME, DEFAULT_BACKBONE, default_model_dir, load_encoder_config
from ..embedding.prompts import get_template

OBJECTIVES = (
    "single-pass", "two-pass-dropout", "two-pass-prompts", "two-pass-crops", "two-pass-ict", "two-pass-title",
)  # fmt: skip
DOCUMENT_OBJECTIVES = ("two-pass-crops", "two-pass-ict", "two-pass-title")  # views from whole documents
QUERY_OBJECTIVES = ("two-pass-ict", "two-pass-title")  # the anchor is embedded with the query prompt
SCHEDULES = ("linear", "cosine", "constant")
QUANTIZATIONS = ("nf4", "none")
TRAIN_DTYPES = ("auto", "float32", "bfloat16")
_DEFAULT_TEMPLATES = {
    "single-pass": "eol-sum",
    "two-pass-dropout": "eol",
    "two-pass-prompts": "eol",
    "two-pass-crops": "eol-sum",  # the inference prompt: crops train the representation that is searched with
    "two-pass-ict": "eol-sum",  # the passage side; the sentence side uses the query prompt
    "two-pass-title": "eol-sum",  # the text side; the title side uses the query prompt
}

# Unsupervised domain adaptation (`sfp-rag train --corpus DIR`): what it changes from the TrainConfig defaults.
# Chosen on tuning data only (NFCorpus train queries, README "Unsupervised domain adaptation"): each document's title,
# under the query prompt, against its text (64 tokens), 40 steps of batch 32 (about 8 minutes on 2 CPU cores), from the
# shipped default; documents without a title (a plain folder) give two independent crops instead. It beat 120 steps
# of crops alone (the earlier recipe), inverse cloze, and a half-and-half mix of titles and crops; single-pass on
# the corpus's sentences lowered retrieval. Plain LoRA: the 270M backbone fits anywhere, and NF4 is slower on a CPU.
DOMAIN_ADAPTATION = {
    "objective": "two-pass-title",
    "max_text_tokens": 64,
    "max_steps": 40,
    "warmup_steps": 6,
    "quantization": "none",
}


def domain_adaptation_defaults() -> dict[str, Any]:
    """``DOMAIN_ADAPTATION`` plus the model it starts from: the shipped default (its backbone when not installed)."""
    shipped = default_model_dir()
    return {**DOMAIN_ADAPTATION, "model": str(shipped) if shipped is not None else DEFAULT_BACKBONE}


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved with the adapter in ``sfp_config.json``."""

    data: str = field(metadata={"help": "training text: file, .gz, .jsonl, dataset, hf:NAME, docs or BEIR folder"})
    output_dir: str = field(metadata={"help": "where the adapter, checkpoints and log go"})
    model: str = DEFAULT_BACKBONE
    objective: str = "single-pass"
    template: str | None = field(
        default=None, metadata={"help": "default: eol (two-pass-dropout, two-pass-prompts), eol-sum (the others)"}
    )
    query_template: str | None = field(
        default=None,
        metadata={"help": "query prompt recorded for search (default: that of the adapter continued from)"},
    )
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
    crop_min: float = field(default=0.1, metadata={"help": "two-pass-crops: shortest crop, as a share of the words"})
    crop_max: float = field(default=0.5, metadata={"help": "two-pass-crops: longest crop, as a share of the words"})
    ict_keep: float = field(
        default=0.1, metadata={"help": "two-pass-ict: chance that the query sentence is left in its passage"}
    )
    title_share: float = field(
        default=1.0,
        metadata={
            "help": "two-pass-title: share of the batches that train titles -> text; the others train two crops of "
            "each text, both under the document prompt (the two-pass-crops objective)"
        },
    )
    topic_clusters: int = field(
        default=0,
        metadata={"help": "0: random batches; K >= 2: TAS-B batches from K k-means clusters of the texts"},
    )
    hard_negatives: int = field(
        default=0,
        metadata={
            "help": "two-pass-title: N hard negatives per title, drawn each step from the texts BM25 ranks high for "
            "it that are not its own (training.hard_negatives); 0: in-batch negatives only"
        },
    )
    hard_negative_depth: int = field(default=20, metadata={"help": "BM25 hits per title the negatives come from"})
    hard_negative_guard: float = field(
        default=0.9,
        metadata={"help": "false-negative guard: a hit is kept only below this share of the own text's BM25 score"},
    )
    grad_cache: int = field(
        default=0,
        metadata={
            "help": "0: off; N: embed batches N rows at a time (GradCache: whole-batch negatives, N-row memory)"
        },
    )
    gradient_checkpointing: bool = False
    matryoshka_dims: list[int] = field(
        default_factory=list,
        metadata={"help": "also train these shorter widths (InfoNCE on each prefix, averaged); empty: off"},
    )
    pseudo_queries: int = field(
        default=0,
        metadata={"help": "two-pass-title: also train on generated (query -> passage) pairs for N passages; 0: off"},
    )
    generator: str | None = field(
        default=None, metadata={"help": "the causal LM that writes the pseudo-queries (default: the backbone)"}
    )
    pseudo_query_round_trip: int = field(
        default=0,
        metadata={
            "help": "keep a pseudo-query only if BM25 over the corpus's passages ranks a passage of its own document "
            "within this many hits (round-trip consistency); 0: off"
        },
    )
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
            self.query_template = self.query_template or recorded.query_template
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
        if self.query_template is not None:
            get_template(self.query_template)
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
        if not 0 < self.crop_min <= self.crop_max <= 1:
            raise ValueError(f"need 0 < crop_min <= crop_max <= 1, got {self.crop_min}, {self.crop_max}")
        if not 0 <= self.ict_keep <= 1:
            raise ValueError(f"ict_keep must be in [0, 1], got {self.ict_keep}")
        if not 0 < self.title_share <= 1:
            raise ValueError(
                f"title_share must be in (0, 1], got {self.title_share}; "
                "for crops alone use --objective two-pass-crops"
            )
        if self.title_share < 1 and self.objective != "two-pass-title":
            raise ValueError(f"title_share mixes title and crop batches of two-pass-title, not {self.objective}")
        for name in ("lora_dropout", "dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.topic_clusters == 1 or self.topic_clusters < 0:
            raise ValueError(f"topic_clusters must be 0 (random batches) or at least 2, got {self.topic_clusters}")
        if not isinstance(self.pseudo_queries, int) or self.pseudo_queries < 0:
            raise ValueError(f"pseudo_queries must be 0 (off) or a number of passages, got {self.pseudo_queries!r}")
        if self.pseudo_queries and self.generator is None:
            self.generator = self.model
        trip = self.pseudo_query_round_trip
        if not isinstance(trip, int) or trip < 0:
            raise ValueError(f"pseudo_query_round_trip must be 0 (off) or a number of BM25 hits, got {trip!r}")
        if trip and not self.pseudo_queries:
            raise ValueError(
                "pseudo_query_round_trip filters pseudo-queries: it needs pseudo_queries (a number of passages)"
            )
        if self.pseudo_queries and self.objective != "two-pass-title":
            raise ValueError(
                f"pseudo-queries train as (query -> passage) pairs under two-pass-title, not {self.objective}; "
                "pass --objective two-pass-title (train --corpus uses it)"
            )
        if not isinstance(self.hard_negatives, int) or self.hard_negatives < 0:
            raise ValueError(f"hard_negatives must be 0 (off) or a number per title, got {self.hard_negatives!r}")
        if self.hard_negatives:
            if self.objective != "two-pass-title":
                raise ValueError(
                    f"hard negatives are mined for titles (two-pass-title), not {self.objective}; "
                    "pass --objective two-pass-title (train --corpus uses it)"
                )
            if self.grad_cache:
                raise ValueError("hard_negatives do not run with grad_cache yet: leave one of them at 0")
            if self.hard_negative_depth < 1 or not 0 < self.hard_negative_guard <= 1:
                raise ValueError(
                    f"need hard_negative_depth >= 1 and 0 < hard_negative_guard <= 1, got "
                    f"{self.hard_negative_depth} and {self.hard_negative_guard}"
                )
        if self.grad_cache < 0:
            raise ValueError(f"grad_cache must be 0 (off) or a positive number of rows, got {self.grad_cache}")
        self.matryoshka_dims = sorted({int(d) for d in self.matryoshka_dims or ()})
        if any(d < 1 for d in self.matryoshka_dims):
            raise ValueError(f"matryoshka_dims must be positive widths, got {self.matryoshka_dims}")
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
