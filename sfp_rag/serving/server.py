"""Start ``sfp-rag serve``: load the encoder once, open the indexes, warm up, then listen (uvicorn).

The encoder is ``config.model`` or, without one, the encoder the (first) served index records, so queries are
embedded the way the index was; every served index must have been built by it. Warming up runs a forward pass of a
full batch, so the first request does not pay for lazy initialisation.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .config import ServeConfig
from .registry import IndexRegistry

logger = logging.getLogger(__name__)


def load_encoder(config: ServeConfig):
    """The server's encoder: ``config.model``, else the one recorded by the first served index."""
    from ..embedding.encoder import SFPEncoder

    overrides = {k: v for k, v in {"device": config.device, "dtype": config.dtype}.items() if v is not None}
    if config.model is None:
        registry = IndexRegistry(config.indexes, None)
        names = registry.names()
        if names:
            from ..retrieval.searcher import Searcher

            searcher = Searcher.open(registry.path(names[0])[1], **overrides)
            return searcher.encoder
    return SFPEncoder.from_pretrained(config.model, **overrides)


def warm_up(encoder, batch_size: int) -> float:
    started = time.perf_counter()
    encoder.encode_queries(["warming up the model"] * min(batch_size, 8), show_progress_bar=False)
    return time.perf_counter() - started


def build(config: ServeConfig, answer=None) -> tuple[Any, Any]:
    """Everything but the listening: (app, encoder). Raises with the reason when an index cannot be served."""
    from .app import create_app

    encoder = load_encoder(config)
    registry = IndexRegistry(config.indexes, encoder)
    names = registry.check_all()
    logger.info("serving %d indexes (%s) with %s", len(names), ", ".join(names) or "none yet", encoder)
    logger.info("warm-up pass: %.2f s", warm_up(encoder, config.max_batch_size))
    return create_app(config, encoder, registry, answer=answer), encoder


def run(config: ServeConfig, answer=None, log_level: str = "info") -> None:
    import uvicorn

    app, _ = build(config, answer)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False)
