"""Embedding on Ray: Ray Data ``map_batches`` over an actor pool of encoders (each loads the model once).

Simplifications: documents are read and chunked by the driver (cheap next to embedding, and it keeps the chunk
boundaries, skip reasons and incremental bookkeeping identical to the in-process path); only the embedding is
distributed. Each call embeds one group of texts (``group_size``), so an interrupted build resumes from the vector
shards saved after every group, exactly as without Ray.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .._utils import require

logger = logging.getLogger(__name__)

RAY_INSTALL = "pip install 'sfp-rag[distributed]' (or: pip install 'ray[data]')"


class _EncodeBatch:
    """A Ray Data actor: builds its encoder once, then embeds the batches it is given."""

    def __init__(self, config: dict[str, Any], batch_size: int) -> None:
        from ..embedding.encoder import SFPEncoder

        settings = dict(config)
        self.encoder = SFPEncoder.from_pretrained(settings.pop("model"), **settings)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode_documents(
            [str(t) for t in batch["text"]], batch_size=self.batch_size, show_progress_bar=False
        )
        return {"i": batch["i"], "vector": vectors}


class RayEmbedder:
    """``texts -> (n, d) float32`` on a Ray cluster.

    Args:
        encoder: the (local) encoder whose settings the actors rebuild; its vectors and the actors' agree.
        workers: actors; default: one per GPU of the cluster, or 1 on CPU.
        address: a running cluster (``ray://...`` or ``host:port``); None starts a local Ray for this process.
        batch_size: texts per forward pass in an actor.
        group_size: texts per Ray job (the builder saves vectors after each).
    """

    def __init__(
        self,
        encoder,
        workers: int | None = None,
        address: str | None = None,
        batch_size: int = 32,
        group_size: int = 8192,
    ) -> None:
        require("ray", "Distributed indexing", RAY_INSTALL)
        import ray

        self._started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None and workers is not None:
                options["num_cpus"] = max(workers + 1, 2)  # the actors plus Ray Data's own tasks
            ray.init(address=address, **options)
            self._started = True
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.workers = workers or max(gpus, 1)
        self.num_gpus = 1 if gpus else 0
        config = encoder.config.to_dict()
        config["device"] = "cuda" if gpus else "cpu"
        self.config = config
        self.batch_size = batch_size
        self.group_size = group_size
        self.dim = encoder.dim
        logger.info("Ray: %d %s actors", self.workers, "GPU" if gpus else "CPU")

    def __call__(self, texts: list[str]) -> np.ndarray:
        import ray

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        per_actor = -(-len(texts) // self.workers)
        rows = [{"i": i, "text": t} for i, t in enumerate(texts)]
        dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), self.workers * 4))
        embedded = dataset.map_batches(
            _EncodeBatch,
            fn_constructor_kwargs={"config": self.config, "batch_size": self.batch_size},
            batch_size=max(1, min(per_actor, 1024)),
            concurrency=self.workers,
            num_gpus=self.num_gpus,
            num_cpus=0 if self.num_gpus else 1,
        )
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for batch in embedded.iter_batches(batch_format="numpy", batch_size=None):
            out[batch["i"]] = np.stack(batch["vector"])
        return out

    def close(self) -> None:
        """Shut down the local Ray this embedder started (a cluster joined by address is left running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
