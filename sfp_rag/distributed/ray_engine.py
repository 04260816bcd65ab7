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
import os
import socket
import subprocess
import sys
from typing import Any

import numpy as np

from .._utils import require

logger = logging.getLogger(__name__)

RAY_INSTALL = "pip install 'sfp-rag[distributed]' (or: pip install 'ray[data]')"
RAY_TIMEOUT_ENV = "SFP_RAG_RAY_TIMEOUT"
DEFAULT_RAY_TIMEOUT = 30.0
_DEFAULT_PORTS = {"ray://": 10001, "": 6379}  # Ray Client's port, the GCS port


class RayClusterError(ValueError):
    """No Ray cluster answers at the address given."""


def ray_timeout() -> float:
    """Seconds to wait for a Ray cluster to answer: ``$SFP_RAG_RAY_TIMEOUT``, else 30."""
    value = os.environ.get(RAY_TIMEOUT_ENV)
    try:
        seconds = float(value) if value else DEFAULT_RAY_TIMEOUT
    except ValueError:
        raise ValueError(f"{RAY_TIMEOUT_ENV} must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise ValueError(f"{RAY_TIMEOUT_ENV} must be positive, got {value!r}")
    return seconds


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``ray://host:port`` (Ray's default port where none is given); None for
    ``auto``, which Ray resolves itself."""
    if address == "auto":
        return None
    scheme = "ray://" if address.startswith("ray://") else ""
    rest = address[len(scheme) :].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, _DEFAULT_PORTS[scheme]
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise RayClusterError(f"--ray-address {address!r} is not host:port or ray://host:port") from None


def check_cluster(address: str, timeout: float | None = None) -> None:
    """Raise ``RayClusterError`` within ``timeout`` seconds (default ``ray_timeout()``) when no Ray cluster answers
    at ``address``. Ray's own connect retries for minutes without a word, so the attempt runs in a child process
    that is stopped at the deadline; a closed port is reported at once."""
    timeout = ray_timeout() if timeout is None else timeout
    hint = (
        "start a cluster there (on that machine: ray start --head), check the address, or leave out --ray-address "
        "to run a local Ray"
    )
    target = _host_port(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=min(timeout, 5.0)).close()
        except OSError as err:
            raise RayClusterError(f"no Ray cluster at {address}: {err.strerror or err}; {hint}") from None
    code = (
        "import sys, ray\n"
        "ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, logging_level='ERROR')\n"
        "print(ray.cluster_resources().get('CPU', 0))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RayClusterError(
            f"no Ray cluster answered at {address} within {timeout:g} s (${RAY_TIMEOUT_ENV} sets the wait); {hint}"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise RayClusterError(f"could not join the Ray cluster at {address} ({last[:300]}); {hint}")


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
        address: a running cluster (``ray://...`` or ``host:port``); None starts a local Ray for this process. A
            cluster that does not answer within ``$SFP_RAG_RAY_TIMEOUT`` seconds (30) is a ``RayClusterError``.
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
            if address is not None:
                check_cluster(address)  # a bounded wait: ray.init alone retries for ever on a dead address
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
