"""``ServeConfig``: what a server listens on, serves and accepts, validated before anything loads."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    """Settings of ``sfp-rag serve`` (every limit answers with a JSON error that names it)."""

    host: str = field(default="127.0.0.1", metadata={"help": "bind address; not loopback needs api_key"})
    port: int = 8000
    model: str | None = field(default=None, metadata={"help": "the encoder; None: the one the indexes record"})
    indexes: tuple[str, ...] = field(default=(), metadata={"help": "index names or paths; () serves the home"})
    api_key: str | None = field(default=None, metadata={"help": "required as 'Authorization: Bearer KEY'"})
    max_batch_tokens: int = field(default=16384, metadata={"help": "padded tokens per forward pass at most"})
    max_batch_size: int = field(default=64, metadata={"help": "texts per forward pass at most"})
    max_wait_ms: float = field(default=4.0, metadata={"help": "how long a batch waits for more requests"})
    max_queue: int = field(default=1024, metadata={"help": "texts waiting at most; more gets 503"})
    max_inputs: int = field(default=256, metadata={"help": "texts (or queries) per request at most; 413"})
    max_chars: int = field(
        default=32_000, metadata={"help": "longer texts are cut to this many characters (the model reads 512 tokens)"}
    )
    max_k: int = field(default=100, metadata={"help": "hits per query at most; 422"})
    device: str | None = None
    dtype: str | None = None
    runtime: str | None = field(default=None, metadata={"help": "auto, torch or openvino (None: auto)"})
    llm: str | None = field(default=None, metadata={"help": "the answering LM for /ask (default smollm2-135m)"})

    def __post_init__(self) -> None:
        self.indexes = tuple(self.indexes)
        if not isinstance(self.port, int) or not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port!r}")
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(
                f"binding to {self.host} makes the server reachable from other machines: give --api-key (or "
                "SFP_RAG_API_KEY), or bind to 127.0.0.1"
            )
        if self.api_key is not None and len(self.api_key) < 8:
            raise ValueError("api_key must be at least 8 characters")
        for name in ("max_batch_tokens", "max_batch_size", "max_queue", "max_inputs", "max_chars", "max_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ValueError(f"max_wait_ms must be in [0, 1000], got {self.max_wait_ms!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["api_key"] = "***" if self.api_key else None
        return out
