"""An append-only on-disk map from text keys to vectors, written in shards so long jobs can resume.

``embed_with_store`` embeds only the texts whose key is not stored yet and appends each group of results as one
shard (written to a temporary file and renamed, so a killed job leaves whole shards only). Re-running the same job
finds the finished groups and continues. Keys combine the encoder fingerprint with a hash of the text, so one store
can hold vectors of several encoders without mixing them up.

Simplification: all keys of a store are loaded into memory when it is opened (about 100 bytes per vector).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .._utils import require_regular_file

logger = logging.getLogger(__name__)


def text_key(fingerprint: str, text: str) -> str:
    return hashlib.sha256(f"{fingerprint}\x00{text}".encode()).hexdigest()[:32]


class ShardedVectorStore:
    """Vectors stored in ``directory/shard-*.npz`` files, each holding ``keys`` and ``vectors``."""

    def __init__(self, directory: str | Path, dim: int) -> None:
        self.directory = Path(directory)
        self.dim = dim
        self._where: dict[str, tuple[Path, int]] = {}
        self._loaded: dict[Path, np.ndarray] = {}
        self.directory.mkdir(parents=True, exist_ok=True)
        for shard in sorted(self.directory.glob("shard-*.npz")):
            try:
                require_regular_file(shard, "vector shard")  # a FIFO there would block the resume
                with np.load(shard) as data:
                    keys = data["keys"]
                    if data["vectors"].shape[1] != dim:
                        raise ValueError("dim")
            except (OSError, ValueError, KeyError) as err:  # a damaged shard: drop it, its texts are re-embedded
                logger.warning("ignoring damaged shard %s (%s)", shard, err)
                continue
            for row, key in enumerate(keys.tolist()):
                self._where[key] = (shard, row)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Vectors for ``keys`` (all must be stored): (len(keys), dim) float32."""
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            shard, row = self._where[key]
            if shard not in self._loaded:
                with np.load(shard) as data:
                    self._loaded[shard] = data["vectors"]
            out[i] = self._loaded[shard][row]
        return out

    def append(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys but {len(vectors)} vectors")
        if not len(keys):
            return
        n = len(list(self.directory.glob("shard-*.npz")))
        target = self.directory / f"shard-{n:06d}-{os.getpid()}.npz"
        fd, tmp = tempfile.mkstemp(prefix=".shard-", suffix=".npz", dir=self.directory)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, keys=np.asarray(keys), vectors=np.asarray(vectors, dtype=np.float32))
        os.replace(tmp, target)
        for row, key in enumerate(keys):
            self._where[key] = (target, row)


def embed_with_store(
    texts: Sequence[str],
    embed: Callable[[list[str]], np.ndarray],
    store: ShardedVectorStore,
    fingerprint: str,
    group_size: int = 512,
    progress=None,
) -> np.ndarray:
    """Vectors for ``texts``, embedding only those not in ``store``; each finished group is saved at once."""
    keys = [text_key(fingerprint, t) for t in texts]
    todo: dict[str, str] = {}
    for key, text in zip(keys, texts):
        if key not in store and key not in todo:
            todo[key] = text
    done = len(set(keys)) - len(todo)
    if done:
        logger.info("resuming: %d of %d texts already embedded", done, len(set(keys)))
    if progress is not None:  # counts distinct texts
        progress.update(done)
    pending = list(todo.items())
    for start in range(0, len(pending), group_size):
        group = pending[start : start + group_size]
        vectors = embed([t for _, t in group])
        store.append([k for k, _ in group], vectors)
        if progress is not None:
            progress.update(len(group))
    return store.get(keys)
