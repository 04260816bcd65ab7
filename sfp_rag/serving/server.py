"""Start ``sfp-rag serve``: load the encoder once, open the indexes, warm up, then listen (uvicorn).

The encoder is ``config.model`` or, without one, the encoder the first served index that opens records, so queries
are embedded the way the index was. An index built by another encoder (or damaged) does not stop the others: it is
answered with 409 and its reason, and ``/health`` lists it. Warming up runs a forward pass of a
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

    settings = {"device": config.device, "dtype": config.dtype, "runtime": config.runtime}
    overrides = {k: v for k, v in settings.items() if v is not None}
    if config.model is None:
        from ..retrieval.searcher import Searcher

        registry = IndexRegistry(config.indexes, None)
        problems = []
        for name in registry.names():  # the first index that opens decides; the others must agree with it
            try:
                return Searcher.open(registry.path(name)[1], **overrides).encoder
            except (ValueError, OSError) as err:
                problems.append(f"{name}: {err}")
        if problems:
            raise ValueError("no served index can be opened, so there is no encoder to serve: " + "; ".join(problems))
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
    names, unavailable = registry.check_all()
    logger.info("serving %d indexes (%s) with %s", len(names), ", ".join(names) or "none yet", encoder)
    for name, reason in unavailable.items():  # served as 409 with this reason, listed in /health
        logger.warning("not serving %s: %s", name, reason)
    logger.info("warm-up pass: %.2f s", warm_up(encoder, config.max_batch_size))
    return create_app(config, encoder, registry, answer=answer), encoder


def run(config: ServeConfig, answer=None, log_level: str = "info") -> None:
    import uvicorn

    app, _ = build(config, answer)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False)
