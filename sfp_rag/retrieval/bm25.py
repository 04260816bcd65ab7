"""BM25 over chunk texts, through ``bm25s`` (a maintained sparse-matrix BM25), for baselines and hybrid search.

Defaults follow Anserini's BEIR "flat" runs: k1=0.9, b=0.4, English stopwords, and stemming (Snowball English via
PyStemmer, where Anserini uses Porter; the two differ on few words). Without PyStemmer, texts are not stemmed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._utils import is_available, require

logger = logging.getLogger(__name__)

_PARAMS = "sfp_bm25.json"


def _bm25s():
    """Import bm25s; it sets its logger to DEBUG on import, so hand the level back to the application's config."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


def _stemmer(stem: bool):
    if not stem:
        return None
    if not is_available("Stemmer"):
        logger.warning("PyStemmer is not installed: BM25 runs without stemming (pip install PyStemmer)")
        return None
    import Stemmer

    return Stemmer.Stemmer("english").stemWords


def analyze(texts: Sequence[str], stem: bool = True) -> list[list[str]]:
    """The terms BM25 indexes for each text: lowercased words without English stopwords, stemmed (where PyStemmer
    is installed)."""
    require("bm25s", "BM25 search", "pip install bm25s PyStemmer")
    bm25s = _bm25s()
    return bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(stem), return_ids=False, show_progress=False)


class BM25Index:
    """A BM25 index whose document ids are the positions of the texts it was built from."""

    def __init__(self, retriever, stem: bool) -> None:
        self.retriever = retriever
        self.stem = stem

    @classmethod
    def build(cls, texts: Sequence[str], k1: float = 0.9, b: float = 0.4, stem: bool = True) -> BM25Index:
        require("bm25s", "BM25 search", "pip install bm25s PyStemmer")
        bm25s = _bm25s()
        tokens = bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(stem), show_progress=False)
        if not tokens.vocab:  # not one indexable word (only stopwords, one-letter words): an index matching nothing
            tokens = type(tokens)(ids=[[0] for _ in texts], vocab={"\x01": 0})
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.index(tokens, show_progress=False)
        return cls(retriever, stem)

    @property
    def ntotal(self) -> int:
        return int(self.retriever.scores["num_docs"])

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query: scores (Q, k) and ids (Q, k); ids are -1 where fewer documents match."""
        k = min(k, self.ntotal)
        # an all-stopword query matches nothing, without failing
        tokens = [t if t else ["\x00"] for t in analyze(queries, self.stem)]
        ids, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        ids = np.where(scores > 0, ids, -1)
        return scores.astype(np.float32), ids.astype(np.int64)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.retriever.save(str(directory), show_progress=False)
        (directory / _PARAMS).write_text(json.dumps({"stem": self.stem}))

    @classmethod
    def load(cls, directory: str | Path) -> BM25Index:
        require("bm25s", "BM25 search", "pip install bm25s PyStemmer")
        directory = Path(directory)
        try:
            params = json.loads((directory / _PARAMS).read_text(encoding="utf-8"))
            if not isinstance(params, dict) or not isinstance(params.get("stem"), bool):
                raise ValueError(f"{_PARAMS} should hold {{'stem': true|false}}")
            # bm25s reads numpy arrays with allow_pickle=False and JSON: nothing in the folder is unpickled
            retriever = _bm25s().BM25.load(str(directory), show_progress=False)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            raise ValueError(
                f"the BM25 index in {directory} is damaged ({type(err).__name__}: {err}); rebuild the index with "
                "--hybrid --rebuild"
            ) from None
        return cls(retriever, params["stem"])
