"""Hard negatives for ``two-pass-title``, mined with BM25 from the training texts themselves.

For each titled unit (``"title\\ntext"``), the title is searched with BM25 over the texts of all units; the texts it
ranks high that are not its own are passages a lexical matcher confuses with the right one, i.e. the near misses
in-batch negatives rarely supply (RocketQA, Qu et al. 2021; ANCE samples its negatives from the top hits the same way).
Some of those hits are relevant to the title too (false negatives): a hit is kept only while its BM25 score is below
``guard`` times the score of the unit's own text for the same title (the "positive-aware" filter of NV-Retriever,
Moreira et al. 2024, with BM25 as the scorer), and units whose own text BM25 does not find are skipped. Every step
then draws its negatives at random from each row's candidates, so a long run sees many of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .data import TITLE_BREAK

logger = logging.getLogger(__name__)


@dataclass
class HardNegatives:
    """Candidate negatives (ids into the training texts) of each unit; empty for units without a title."""

    candidates: list[np.ndarray]

    def sample(self, rows: Sequence[int], per_row: int, rng: np.random.Generator) -> list[int]:
        """Up to ``per_row`` negatives for each of ``rows``, drawn without replacement from its candidates; a text of
        the batch itself, or one drawn already, is never drawn (it would be a positive, or a column twice)."""
        taken = {int(r) for r in rows}
        out: list[int] = []
        for row in rows:
            pool = [int(j) for j in self.candidates[int(row)] if int(j) not in taken]
            if not pool:
                continue
            picks = rng.choice(len(pool), size=min(per_row, len(pool)), replace=False)
            for p in np.atleast_1d(picks):
                out.append(pool[int(p)])
                taken.add(pool[int(p)])
        return out

    def stats(self) -> dict[str, float]:
        sizes = np.array([len(c) for c in self.candidates])
        return {
            "units": int(len(sizes)),
            "with_negatives": int((sizes > 0).sum()),
            "mean_candidates": round(float(sizes[sizes > 0].mean()), 2) if (sizes > 0).any() else 0.0,
        }


def text_of(unit: str) -> str:
    """The text a unit is embedded as on the passage side: what follows its title, or the whole unit."""
    title, found, body = unit.partition(TITLE_BREAK)
    return body if found else unit


def mine_hard_negatives(units: Sequence[str], depth: int = 20, guard: float = 0.9) -> HardNegatives:
    """BM25's top ``depth`` texts other than its own for each unit's title, less copies of its own text and those
    at or above ``guard`` x its own text's score (see the module docstring); none where its own text is not among
    the ``depth + 1`` hits.

    Args:
        units: training units; those with a title (``"title\\ntext"``) get candidates, the others none.
        depth: how many BM25 hits per title are considered (the unit's own text excluded).
        guard: a hit is kept only while its score is below ``guard`` x the score of the unit's own text.
    """
    from ..retrieval.bm25 import BM25Index

    if depth < 1 or not 0 < guard <= 1:
        raise ValueError(f"need depth >= 1 and 0 < guard <= 1, got depth={depth}, guard={guard}")
    texts = [text_of(u) for u in units]
    titled = [i for i, u in enumerate(units) if TITLE_BREAK in u]
    candidates = [np.empty(0, dtype=np.int64) for _ in units]
    if not titled:
        return HardNegatives(candidates)
    index = BM25Index.build(texts)
    scores, ids = index.search([units[i].partition(TITLE_BREAK)[0] for i in titled], depth + 1)
    # BM25 scores one copy of a repeated text like any other; its duplicates are never negatives of each other
    first_of = {}
    for i, t in enumerate(texts):
        first_of.setdefault(t, i)
    for row, i in enumerate(titled):
        own = np.flatnonzero(ids[row] == i)
        if not len(own):  # BM25 does not find the unit's own text for its title: no safe cut-off
            continue
        limit = guard * scores[row, own[0]]
        keep = [
            int(j)
            for j, s in zip(ids[row], scores[row])
            if j >= 0 and j != i and s < limit and first_of[texts[j]] != first_of[texts[i]]
        ]
        candidates[i] = np.asarray(keep, dtype=np.int64)
    mined = HardNegatives(candidates)
    logger.info("hard negatives from BM25: %s", mined.stats())
    return mined
