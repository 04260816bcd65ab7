"""Indexing on Ray: Ray Data reads and chunks the documents, then embeds the chunks with ``map_batches`` over an
actor pool of encoders (each loads the model once).

Two stages, both Ray Data pipelines over actor pools: ``chunk_sources`` reads and chunks the changed documents on
the workers (each actor loads the tokenizer once; the same splitter as in-process, so chunk boundaries and skip
reasons are identical), and ``__call__`` embeds one group of chunk texts (``group_size``) at a time, so an
interrupted build resumes from the vector shards saved after every group, exactly as without Ray. The driver keeps
the incremental bookkeeping (which files changed, by content hash) and writes the index.
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


class _ReadAndChunk:
    """A Ray Data actor: loads the tokenizer once, then reads and chunks the sources whose positions it is given."""

    def __init__(self, sources: list, model: str, chunk_size: int, chunk_overlap: int) -> None:
        from ..embedding.backbones import load_tokenizer
        from ..retrieval.chunking import make_splitter

        tokenizer = load_tokenizer(model)
        self.sources = sources
        self.splitter = make_splitter(
            lambda s: tokenizer.encode(s, add_special_tokens=False), chunk_size, chunk_overlap
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from ..retrieval.chunking import chunk_sources

        rows: dict[str, list] = {"k": [], "index": [], "start": [], "end": [], "text": [], "skip": []}
        for k in map(int, batch["k"]):
            source = self.sources[k]
            result = chunk_sources([source], self.splitter)[source.source]
            if isinstance(result, str):  # a skipped source: one row that says why
                records = [(k, -1, None, None, "", result)]
            else:
                records = [(k, c.index, c.start, c.end, c.text, "") for c in result]
            for record in records:
                for key, value in zip(rows, record):
                    rows[key].append(value)
        return rows


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
            compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(texts))),
            num_gpus=self.num_gpus,
            num_cpus=0 if self.num_gpus else 1,
        )
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for batch in embedded.iter_batches(batch_format="numpy", batch_size=None):
            out[batch["i"]] = np.stack(batch["vector"])
        return out

    def chunk_sources(self, sources: list, chunk_size: int, chunk_overlap: int) -> dict[str, list | str]:
        """Read and chunk ``sources`` on Ray Data workers: what ``retrieval.chunking.chunk_sources`` returns."""
        import ray

        from ..retrieval.documents import Chunk

        if not sources:
            return {}
        dataset = ray.data.from_items(
            [{"k": k} for k in range(len(sources))], override_num_blocks=min(len(sources), self.workers * 4)
        )
        chunked = dataset.map_batches(
            _ReadAndChunk,
            fn_constructor_kwargs={
                "sources": sources,
                "model": self.config["model"],
                "chunk_size": chunk_size,
                "chunk_overlap": chunk_overlap,
            },
            batch_size=max(1, min(-(-len(sources) // self.workers), 256)),
            compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(sources))),
            num_cpus=1,
        )
        found: dict[int, list] = {}
        skipped: dict[int, str] = {}
        for row in chunked.iter_rows():
            k = int(row["k"])
            if row["index"] < 0:
                skipped[k] = row["skip"]
            else:
                start, end = row["start"], row["end"]
                found.setdefault(k, []).append(Chunk(sources[k].source, int(row["index"]),
                                                     None if start is None else int(start),
                                                     None if end is None else int(end), row["text"]))  # fmt: skip
        out: dict[str, list | str] = {}
        for k, s in enumerate(sources):
            out[s.source] = skipped[k] if k in skipped else sorted(found[k], key=lambda c: c.index)
        return out

    def close(self) -> None:
        """Shut down the local Ray this embedder started (a cluster joined by address is left running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
