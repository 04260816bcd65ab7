"""Which texts form each training batch: a seeded shuffle (the default) or topic-clustered batches (TAS-B).

In-batch negatives are only as informative as they are hard. With random batches from a broad corpus most negatives
share nothing with the anchor and the loss is easy; drawing a batch from one topic cluster makes its negatives near
misses at no extra compute (TAS-B's topic-aware sampling: Hofstätter et al., SIGIR 2021, arXiv 2104.06967). The
clusters come from k-means (FAISS) over the starting model's own embeddings of the training texts, computed once per
run and saved with it (``topics.npy``), so a resumed run sees the same batches.

Both orders depend only on their inputs and ``(seed, i)``, never on what ran before: a resumed run continues the
exact batch sequence of an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

TOPICS_NAME = "topics.npy"


class BatchOrder:
    """Which texts form global batch ``i``: a fresh seeded permutation each epoch, last partial batch dropped.

    Depends only on (n, batch_size, seed, i), so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise ValueError(f"only {n} training texts for batch_size {batch_size}; add data or lower --batch-size")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def __call__(self, i: int) -> np.ndarray:
        epoch, j = divmod(i, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng(self.seed + epoch).permutation(self.n)
        return self._perm[j * self.batch_size : (j + 1) * self.batch_size]


class TopicBatchOrder:
    """Batches that each come from one topic cluster where the cluster is big enough (TAS-B).

    Each epoch: the clusters in a seeded random order, each cluster's members shuffled, all laid end to end and cut
    into batches; then the batches are shuffled. Every text is used once per epoch (the last ``n % batch_size``
    dropped, as in ``BatchOrder``); a batch spans two clusters only where one ends. Clusters smaller than a batch
    share batches with their neighbours in the order.

    Args:
        labels: (n,) cluster id of each training text.
        batch_size: global batch size.
        seed: the run's seed; epoch ``e`` uses ``seed + e``.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be one cluster id per text, got shape {labels.shape}")
        if len(labels) < batch_size:
            raise ValueError(
                f"only {len(labels)} training texts for batch_size {batch_size}; add data or lower --batch-size"
            )
        self.labels, self.batch_size, self.seed = labels, batch_size, seed
        self.n = len(labels)
        self.per_epoch = self.n // batch_size
        self._members = [np.flatnonzero(labels == c) for c in np.unique(labels)]  # (cluster,) -> (size,) rows
        self._epoch, self._batches = -1, None

    def __call__(self, i: int) -> np.ndarray:
        epoch, j = divmod(i, self.per_epoch)
        if epoch != self._epoch:
            rng = np.random.default_rng(self.seed + epoch)
            order = rng.permutation(len(self._members))
            laid = np.concatenate([rng.permutation(self._members[c]) for c in order])  # (n,)
            batches = laid[: self.per_epoch * self.batch_size].reshape(self.per_epoch, self.batch_size)
            self._epoch, self._batches = epoch, batches[rng.permutation(self.per_epoch)]
        return self._batches[j]


def kmeans_labels(embeddings: np.ndarray, k: int, seed: int, niter: int = 20) -> np.ndarray:
    """(n,) cluster id of each row of ``embeddings`` (n, d) from spherical k-means (FAISS)."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if not 2 <= k <= len(x):
        raise ValueError(f"topic clusters must be between 2 and the number of training texts ({len(x)}), got {k}")
    kmeans = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False)
    kmeans.train(x)
    _, assigned = kmeans.index.search(x, 1)  # (n, 1): the nearest centroid
    return assigned[:, 0].astype(np.int64)


def load_topics(output: Path, n: int) -> np.ndarray | None:
    """The cluster ids a run saved, or None when there are none (or they were made for other texts)."""
    path = Path(output) / TOPICS_NAME
    if not path.exists():
        return None
    labels = np.load(path)
    if labels.shape != (n,):
        logger.warning("%s holds %d labels for %d training texts; clustering again", path, labels.size, n)
        return None
    return labels


def save_topics(output: Path, labels: np.ndarray) -> Path:
    """Write the cluster ids atomically (a cut-off write leaves no half file for a resume to trust)."""
    path = Path(output) / TOPICS_NAME
    tmp = path.with_name(f".{TOPICS_NAME}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(labels, dtype=np.int64))
    os.replace(tmp, path)
    return path


def cluster_sizes(labels: np.ndarray) -> dict[str, float]:
    """Summary of a clustering for the log: number of clusters, smallest, median and largest size."""
    sizes = np.bincount(labels)
    sizes = sizes[sizes > 0]
    return {
        "clusters": int(len(sizes)),
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "max": int(sizes.max()),
    }
