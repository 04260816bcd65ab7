"""Alignment and uniformity of an embedding space (Wang & Isola, 2020), measured on STS-B as SimCSE does.

With f(x) the L2-normalised embedding:

- alignment  = mean over positive pairs of ||f(x) - f(y)||^2, the positive pairs being the STS-B pairs with a gold
  score above 4 (lower is better: paraphrases sit close);
- uniformity = log mean over all pairs of distinct sentences of exp(-2 ||f(x) - f(y)||^2) (lower is better: the
  sentences spread over the sphere);
- ratio      = -uniformity / alignment, our single number combining the two (higher is better: spread out overall
  while paraphrases stay close). It is only a summary; read the two coordinates for the trade-off.

The STS-B dev split is the default (as in SimCSE's analysis), so no test data is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .sts import load_sts_task

logger = logging.getLogger(__name__)

POSITIVE_THRESHOLD = 4.0


def alignment(x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared distance between rows of two normalised (N, d) arrays."""
    return float(np.mean(np.sum((x - y) ** 2, axis=1)))


def uniformity(x: np.ndarray, t: float = 2.0) -> float:
    """log of the mean of exp(-t * squared distance) over all pairs i < j of rows of a normalised (N, d) array."""
    sq = np.sum(x**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)  # (N, N) squared distances
    iu = np.triu_indices(len(x), k=1)
    values = -t * d2[iu]
    m = values.max()
    return float(m + np.log(np.mean(np.exp(values - m))))  # log-mean-exp, stable


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def evaluate_space(encoder_or_fn, data_dir: str | Path, split: str = "dev", batch_size: int = 64) -> dict:
    """Alignment, uniformity and their ratio on STS-B ``split`` (dev or test)."""
    if split not in ("dev", "test"):
        raise ValueError(f"split must be 'dev' or 'test', got {split!r}")
    task = load_sts_task(data_dir, "STSBenchmark-dev" if split == "dev" else "STSBenchmark")
    s1, s2, gold = task.pairs()
    sentences = sorted(set(s1) | set(s2))
    if hasattr(encoder_or_fn, "encode"):
        vectors = encoder_or_fn.encode(sentences, batch_size=batch_size)
    else:
        vectors = np.asarray(encoder_or_fn(sentences), dtype=np.float32)
    vectors = _normalize(np.asarray(vectors, dtype=np.float64))
    row = {s: i for i, s in enumerate(sentences)}
    positive = gold > POSITIVE_THRESHOLD
    a = vectors[[row[s] for s, keep in zip(s1, positive) if keep]]
    b = vectors[[row[s] for s, keep in zip(s2, positive) if keep]]
    align, uniform = alignment(a, b), uniformity(vectors)
    return {
        "kind": "space",
        "split": split,
        "alignment": align,
        "uniformity": uniform,
        "ratio": -uniform / align if align > 0 else float("inf"),
        "positive_pairs": int(positive.sum()),
        "sentences": len(sentences),
    }
