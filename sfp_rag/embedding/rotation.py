"""Shorter vectors that keep their quality: a model's principal directions, fitted once, saved next to its weights.

``truncate_dim=N`` keeps N dimensions of each vector. A model trained without ``--matryoshka-dims`` spreads what it
knows over all of its dimensions, so its first N keep little (the default at 64 of 640: 8.4 nDCG@10 of 22.3 on the
NFCorpus train proxy, uncentered). An orthogonal rotation changes no cosine at full width; onto the principal
directions of the model's own vectors, the first N dimensions hold the most variance (64: 19.2, 128: 22.2;
``benchmarks/widths_pca.py``). ``fit_rotation`` fits it on general text; a model folder that holds
``rotation.npy`` has its vectors rotated before they are cut. Full-width vectors are never rotated, so indexes and
every full-width number stay as they are.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._utils import atomic_write_bytes

ROTATION_NAME = "rotation.npy"


def fit_rotation(vectors: np.ndarray) -> np.ndarray:
    """The principal directions of ``vectors`` (N, D), largest variance first, as the columns of a (D, D) float32
    orthogonal matrix (needs N >= D)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    n, d = vectors.shape
    if n < d:
        raise ValueError(f"fitting a rotation of {d} dimensions needs at least {d} vectors, got {n}")
    _, _, vt = np.linalg.svd(vectors - vectors.mean(axis=0), full_matrices=False)
    return np.ascontiguousarray(vt.T, dtype=np.float32)


def fit_model_rotation(encoder, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """``fit_rotation`` of ``encoder``'s full-width document vectors of ``texts`` (general text, not a test set)."""
    return fit_rotation(encoder.encode_documents(list(texts), batch_size=batch_size, truncate_dim=encoder.full_dim))


def save_rotation(folder: str | Path, rotation: np.ndarray) -> Path:
    """Write ``rotation`` as ``folder/rotation.npy`` (atomically), after checking it."""
    check_rotation(rotation, rotation.shape[0], "the rotation to save")
    path = Path(folder) / ROTATION_NAME
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(rotation, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_rotation(folder: str | Path | None, dim: int) -> tuple[np.ndarray | None, str | None]:
    """``(rotation, digest)`` from ``folder/rotation.npy``, or ``(None, None)`` where there is none."""
    if not folder:
        return None, None
    path = Path(folder) / ROTATION_NAME
    if not path.is_file():
        return None, None
    try:
        rotation = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path} is not a numpy matrix ({err}); delete it, or fit it again") from None
    check_rotation(rotation, dim, str(path))
    return rotation.astype(np.float32), hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def check_rotation(rotation: np.ndarray, dim: int, where: str) -> None:
    if rotation.ndim != 2 or rotation.shape != (dim, dim):
        raise ValueError(f"{where}: a rotation must be a ({dim}, {dim}) matrix, got shape {rotation.shape}")
    error = np.abs(rotation.astype(np.float64).T @ rotation - np.eye(dim)).max()
    if not np.isfinite(error) or error > 1e-3:
        raise ValueError(f"{where} is not orthogonal (|R^T R - I| = {error:.2g}); fit it again")
