"""``Hit``: one search result, the same type whether it comes from a local ``Index`` or a server (``SFPClient``).

It lives at the bottom of the package (no numpy, no torch) so that the HTTP client can return it too. A hit carries
its ranking score, whose meaning depends on the search mode (``retrieval.index_folder.SCORE_KINDS``), and, where
the search computed them, the two raw scores behind it: ``cosine`` (the dense similarity, -1..1, comparable across
queries) and ``bm25`` (the keyword score, 0 and up). The fused ``hybrid`` score is relative to the query's best
candidates (the top hit of a hybrid search scores near 1 however poor it is), so a relevance threshold belongs on
``cosine``, not on ``score``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None (JSON null): indexes written before such metadata was refused
    may hold them, and standard JSON has no way to say them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


@dataclass
class Hit:
    """One retrieved chunk.

    Attributes:
        score: the ranking score of the search mode (``retrieval.index_folder.SCORE_KINDS``); higher is better.
        row: the chunk's row in the index.
        source: the file (relative path) or id the chunk came from.
        chunk: the chunk's number within its source.
        start, end: its character span in the source's text (None for texts added without one).
        text: the chunk's text.
        metadata: what the source was added with (``{}`` when nothing).
        cosine: the cosine similarity of query and chunk as searched (None where the search did not compute it,
            as in ``bm25`` mode).
        bm25: the chunk's BM25 score for the query (None in ``dense`` mode; 0.0 in ``hybrid`` mode when BM25 did
            not retrieve the chunk).
    """

    score: float
    row: int
    source: str
    chunk: int
    start: int | None
    end: int | None
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    cosine: float | None = None
    bm25: float | None = None

    def __post_init__(self) -> None:
        if self.metadata is None:
            self.metadata = {}
        # plain floats (not numpy scalars from FAISS), so that a hit and its scores serialise as they are
        self.score = float(self.score)
        self.cosine = None if self.cosine is None else float(self.cosine)
        self.bm25 = None if self.bm25 is None else float(self.bm25)

    def __repr__(self) -> str:
        snippet = " ".join(self.text.split())
        snippet = snippet if len(snippet) <= 60 else snippet[:57] + "..."
        return f"Hit({self.score:.3f} {self.source}#{self.chunk} {snippet!r})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(float(self.score), 6),
            "cosine": _rounded(self.cosine),
            "bm25": _rounded(self.bm25),
            "source": self.source,
            "chunk": self.chunk,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "row": self.row,
            "metadata": _finite(self.metadata or {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hit:
        """The inverse of ``to_dict`` (what the server's ``/search`` answers); unknown keys are ignored."""
        return cls(
            score=float(data["score"]),
            row=int(data["row"]),
            source=data["source"],
            chunk=int(data["chunk"]),
            start=data.get("start"),
            end=data.get("end"),
            text=data["text"],
            metadata=data.get("metadata") or {},
            cosine=data.get("cosine"),
            bm25=data.get("bm25"),
        )
