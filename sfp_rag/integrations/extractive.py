"""Extractive answers: the sentences of the retrieved passages that best answer a question, each with its citation.

Nothing is generated, so nothing is invented: every sentence of an answer is a sentence of a source, cited as [n]
where n is the source's number. The question is searched as ``sfp-rag query`` would (the index's default mode), the
top ``k`` chunks are split into sentences (Punkt, within paragraphs; Markdown headings and one-word fragments are
left out), and the sentences are ranked the way the index ranks chunks: TM2C2 fusion of the question-to-sentence
cosine (query prompt against document prompt) and a BM25 score over the candidate sentences, at the index's tuned
dense weight. The best ``sentences`` come back, in ranking order.

Simplification: sentences are scored one by one, without the passage around them, so a sentence that answers only
through a pronoun ("It lasts 30 minutes.") can lose to one that repeats the question's words. The sources are listed
with every answer for that reason.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from ..retrieval.chunking import sentences_of
from ..retrieval.fusion import DEFAULT_ALPHA, convex_fuse

logger = logging.getLogger(__name__)

DEFAULT_SENTENCES = 2
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")  # a Markdown heading line
_PARAGRAPH = re.compile(r"\n\s*\n")


def passage_sentences(text: str) -> list[str]:
    """The sentences of a passage: Punkt within each paragraph, headings and fragments under 3 words dropped."""
    out = []
    for block in _PARAGRAPH.split(text):
        lines = [line for line in block.splitlines() if not _HEADING.match(line)]
        out.extend(sentences_of(" ".join(lines), min_words=3))
    return out


def _bm25_scores(question: str, sentences: list[str]) -> np.ndarray:
    """BM25 of ``question`` against each of ``sentences`` (the index's tokenizer and stemmer, built on the fly)."""
    from ..retrieval.bm25 import BM25Index

    scores, ids = BM25Index.build(sentences).search([question], len(sentences))
    out = np.zeros(len(sentences), dtype=np.float32)
    for score, i in zip(scores[0], ids[0]):
        if i >= 0:
            out[int(i)] = score
    return out


def rank_sentences(question: str, candidates: list[tuple[int, str]], encoder) -> list[tuple[int, str, float]]:
    """``(source number, sentence)`` pairs ranked for ``question``: ``(n, sentence, fused score)``, best first."""
    if not candidates:
        return []
    texts = [s for _, s in candidates]
    q = encoder.encode_queries([question])[0]
    cosines = encoder.encode_documents(texts) @ q  # (S,)
    try:
        lexical = _bm25_scores(question, texts)
    except ImportError:  # bm25s missing (a dense-only install): rank by the cosine alone
        lexical = np.zeros(len(texts), dtype=np.float32)
    dense = {i: float(c) for i, c in enumerate(cosines)}
    sparse = {i: float(b) for i, b in enumerate(lexical) if b > 0}
    return [(candidates[i][0], candidates[i][1], score) for i, score in convex_fuse(dense, sparse, DEFAULT_ALPHA)]


def extract_answer(question: str, searcher, k: int = 3, sentences: int = DEFAULT_SENTENCES) -> dict[str, Any]:
    """``{"question", "answer", "mode": "extract", "sentences": [{n, text, score}], "sources": [...]}``.

    ``answer`` is the chosen sentences, each followed by its citation [n]; ``sources`` are the retrieved chunks,
    numbered from 1 in ranking order, with ``cited`` set for those the answer quotes (the same shape as the
    generated answers of ``answering.answer_question``)."""
    if sentences < 1:
        raise ValueError(f"sentences must be at least 1, got {sentences}")
    hits = searcher.search(question, k=k)
    candidates = [(n, s) for n, hit in enumerate(hits, start=1) for s in dict.fromkeys(passage_sentences(hit.text))]
    chosen = rank_sentences(question, candidates, searcher.embedder())[:sentences]
    cited = {n for n, _, _ in chosen}
    answer = " ".join(f"{text} [{n}]" for n, text, _ in chosen)
    return {
        "question": question,
        "answer": answer,
        "mode": "extract",
        "sentences": [{"n": n, "text": text, "score": round(score, 6)} for n, text, score in chosen],
        "sources": [
            {
                "n": n,
                "cited": n in cited,
                "source": hit.source,
                "file_name": hit.source.rsplit("/", 1)[-1],
                "chunk": hit.chunk,
                "score": hit.score,
                "cosine": hit.cosine,
                "text": hit.text,
            }
            for n, hit in enumerate(hits, start=1)
        ],
    }
