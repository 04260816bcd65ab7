"""BEIR retrieval evaluation through the production index path, with baselines and hybrid fusion.

Documents (title + text) are chunked and embedded exactly as ``sfp-rag index`` does (``chunking.make_splitter``,
``vector_store.embed_with_store``, ``index.FaissIndex``); a document's score is its best chunk's. Metrics come from
``pytrec_eval`` (trec_eval, as BEIR itself computes them): nDCG@10, Recall@100, MAP@100, and MRR@10 (reciprocal
rank of the run cut at 10). Chunk embeddings are cached under ``cache_dir()/embeddings/<encoder fingerprint>/``,
keyed by the chunk text, so re-running an evaluation embeds nothing and a changed encoder never reuses vectors.

Systems: any encoder (ours, the untrained backbone with another prompt, all-MiniLM-L6-v2), ``bm25`` (bm25s over
whole documents), and ``hybrid`` (a dense run fused with the BM25 run, as ``retrieval.fusion`` fuses them).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import cache_dir, progress_bar, require, require_regular_file

logger = logging.getLogger(__name__)

METRICS = {"nDCG@10": "ndcg_cut_10", "Recall@100": "recall_100", "MAP@100": "map_cut_100", "MRR@10": "recip_rank"}
DEPTH = 100


class BeirDataError(ValueError):
    """A BEIR file is missing or malformed."""


@dataclass
class BeirData:
    name: str
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # only the queries judged in the split
    qrels: dict[str, dict[str, int]]

    def doc_text(self, doc_id: str) -> str:
        title, text = self.corpus[doc_id]
        return f"{title}\n\n{text}" if title.strip() else text


# --- reading ----------------------------------------------------------------------------------------------------


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    opener = gzip.open if require_regular_file(path, "BEIR file").suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise BeirDataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict) or "_id" not in record:
                raise BeirDataError(f"{path}:{lineno}: a record needs an '_id' field")
            yield lineno, record


def _first(folder: Path, *names: str) -> Path:
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise BeirDataError(f"{folder} has none of {', '.join(names)}; point --data at a BEIR dataset folder")


def load_beir(folder: str | Path, split: str = "test") -> BeirData:
    """Read ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]`` and ``qrels/<split>.tsv``; keep the judged queries."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BeirDataError(f"BEIR folder {folder} does not exist")
    corpus_path = _first(folder, "corpus.jsonl", "corpus.jsonl.gz")
    corpus = {}
    for lineno, r in _jsonl(corpus_path):
        if not isinstance(r.get("text", ""), str):
            raise BeirDataError(f"{corpus_path}:{lineno}: 'text' must be a string")
        corpus[str(r["_id"])] = (str(r.get("title") or ""), r.get("text") or "")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise BeirDataError(f"{qrels_path} is missing; choose an existing split with --split")
    qrels: dict[str, dict[str, int]] = {}
    text = require_regular_file(qrels_path, "BEIR qrels").read_text(encoding="utf-8")
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split("\t")
        if lineno == 1 and parts[0] == "query-id":
            continue
        if not line.strip():
            continue
        if len(parts) != 3:
            raise BeirDataError(f"{qrels_path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score'")
        try:
            score = int(parts[2])
        except ValueError:
            raise BeirDataError(f"{qrels_path}:{lineno}: score {parts[2]!r} is not an integer") from None
        if parts[1] not in corpus:
            raise BeirDataError(f"{qrels_path}:{lineno}: corpus-id {parts[1]!r} is not in {corpus_path.name}")
        qrels.setdefault(parts[0], {})[parts[1]] = score
    queries_path = _first(folder, "queries.jsonl", "queries.jsonl.gz")
    queries = {str(r["_id"]): r.get("text", "") for _, r in _jsonl(queries_path) if str(r["_id"]) in qrels}
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise BeirDataError(f"{qrels_path} judges queries missing from {queries_path.name}: {missing[:5]}")
    return BeirData(folder.name, corpus, queries, qrels)


def subset_queries(data: BeirData, max_queries: int | None) -> BeirData:
    """Keep a fixed subset of the judged queries (the first ``max_queries`` ids in sorted order), for cheap sweeps."""
    if max_queries:
        keep = sorted(data.queries)[:max_queries]
        data.queries = {q: data.queries[q] for q in keep}
        data.qrels = {q: data.qrels[q] for q in keep if q in data.qrels}
    return data


# --- runs -------------------------------------------------------------------------------------------------------

Run = dict[str, dict[str, float]]


def dense_run(
    encoder,
    data: BeirData,
    chunk_size: int = 256,
    chunk_overlap: int = 32,
    depth: int = DEPTH,
    batch_size: int = 32,
    factory: str = "Flat",
    show_progress: bool | None = None,
    embedder=None,
    query_prompt: str | None = None,
    max_chunks: int | None = None,
    also: Run | None = None,
    centering: bool = False,
    components: int | None = None,
) -> tuple[Run, dict]:
    """Top-``depth`` documents per query by their best chunk; also returns chunk and timing stats.

    ``also`` (query id -> documents, e.g. a BM25 run) adds those documents' scores to each query's run after its top
    ``depth``, so a fusion can give every BM25 candidate its dense score (``fuse`` takes the first ``depth`` as the
    dense candidates and the rest as lookups).

    ``max_chunks`` keeps only each document's first N chunks: a cheaper proxy for tuning sweeps (its numbers are not
    comparable with full-document ones).

    ``embedder`` (``texts -> vectors``, e.g. a ``RayEmbedder`` of ``encoder``) embeds the documents instead of the
    encoder itself; queries are always embedded here, with ``query_prompt`` (a preset or template string) when given
    instead of the encoder's query template.

    ``centering`` centers both sides on the corpus as ``sfp-rag index`` does (``retrieval.centering``): fitted on
    the chunks and on pseudo-queries cut from them, never on the queries; ``components`` (None: the index's
    default) how many top directions it removes."""
    from ..retrieval.centering import DEFAULT_COMPONENTS, fit_corpus
    from ..retrieval.faiss_index import FaissIndex

    t0 = time.perf_counter()
    doc_ids, texts, vectors, t_chunk = chunk_vectors(
        encoder, data, chunk_size, chunk_overlap, batch_size, show_progress, embedder, max_chunks
    )
    t_embed = time.perf_counter() - t0 - t_chunk

    def embed_queries(queries: list[str]) -> np.ndarray:
        return encoder.encode(queries, prompt_name="query", prompt=query_prompt, batch_size=batch_size)

    n_components = DEFAULT_COMPONENTS if components is None else components
    fitted = fit_corpus(texts, vectors, embed_queries, components=n_components) if centering else None
    if fitted is not None:
        vectors = fitted.documents(vectors)
    index = FaissIndex.build(vectors, factory)
    qids = list(data.queries)
    qvecs = embed_queries([data.queries[q] for q in qids])
    if fitted is not None:
        qvecs = fitted.queries(qvecs)
    chunks_per_doc = len(texts) / max(len(data.corpus), 1)
    k = min(len(texts), int(math.ceil(depth * chunks_per_doc * 2)))
    scores, ids = index.search(qvecs, k)
    rows_of: dict[str, list[int]] = {}
    for row, doc_id in enumerate(doc_ids):
        rows_of.setdefault(doc_id, []).append(row)
    run: Run = {}
    for qid, qvec, srow, irow in zip(qids, qvecs, scores, ids):
        best: dict[str, float] = {}
        for s, i in zip(srow, irow):
            if i >= 0 and doc_ids[i] not in best:  # rows come best first: the first chunk seen is the doc's best
                best[doc_ids[i]] = float(s)
            if len(best) == depth:
                break
        for doc, score in _best_chunk_scores(vectors, rows_of, qvec, (also or {}).get(qid, ()), best).items():
            best[doc] = score
        run[qid] = best
    stats = {
        "chunks": len(texts),
        "chunks_per_doc": round(chunks_per_doc, 3),
        "chunk_s": round(t_chunk, 1),
        "embed_s": round(t_embed, 1),
        "total_s": round(time.perf_counter() - t0, 1),
        "centering": None if fitted is None else {"components": fitted.components},
    }
    return run, stats


def chunk_vectors(
    encoder,
    data: BeirData,
    chunk_size: int = 256,
    chunk_overlap: int = 32,
    batch_size: int = 32,
    show_progress: bool | None = None,
    embedder=None,
    max_chunks: int | None = None,
) -> tuple[list[str], list[str], np.ndarray, float]:
    """(document id of each chunk, chunk texts, their document vectors, seconds spent chunking): the corpus chunked
    and embedded as ``sfp-rag index`` does, through the evaluation's embedding cache (see ``dense_run``)."""
    from ..retrieval.chunking import chunk_text, make_splitter
    from ..retrieval.vector_store import ShardedVectorStore, embed_with_store

    t0 = time.perf_counter()
    splitter = make_splitter(
        lambda s: encoder.tokenizer.encode(s, add_special_tokens=False), chunk_size, chunk_overlap
    )
    doc_ids, texts = [], []
    for doc_id in data.corpus:
        for chunk in (chunk_text(splitter, doc_id, data.doc_text(doc_id)) or [])[:max_chunks]:
            doc_ids.append(doc_id)
            texts.append(chunk.text)
    t_chunk = time.perf_counter() - t0
    # an encoder with truncate_dim reads (and fills) the cache of its full-width vectors and cuts them: every width
    # of one model is scored from one embedding pass (the cut vectors equal what encode gives at that width)
    cut = getattr(getattr(encoder, "config", None), "truncate_dim", None) is not None and embedder is None
    fingerprint = encoder.document_fingerprint(full_width=True) if cut else encoder.document_fingerprint()
    store = ShardedVectorStore(cache_dir() / "embeddings" / fingerprint, encoder.full_dim if cut else encoder.dim)
    bar = progress_bar(len(set(texts)), f"embed {data.name}", "chunk", show_progress, logger)
    full = {"truncate_dim": encoder.full_dim} if cut else {}
    embed = embedder or (lambda t: encoder.encode_documents(t, batch_size=batch_size, **full))
    vectors = embed_with_store(
        texts, embed, store, fingerprint, group_size=getattr(embed, "group_size", 1024), progress=bar
    )
    bar.close()
    if cut:
        vectors = encoder.truncate_vectors(vectors)
    return doc_ids, texts, vectors, t_chunk


def _best_chunk_scores(vectors, rows_of, qvec, docs, known) -> dict[str, float]:
    """Each of ``docs`` not in ``known`` (and in the corpus) scored by its best chunk, exactly."""
    docs = [d for d in dict.fromkeys(docs) if d not in known and d in rows_of]
    if not docs:
        return {}
    rows = [rows_of[d] for d in docs]
    sims = np.asarray(vectors[np.concatenate(rows)], dtype=np.float32) @ qvec
    starts = np.cumsum([0] + [len(r) for r in rows[:-1]])
    return dict(zip(docs, np.maximum.reduceat(sims, starts).astype(float).tolist()))


def _ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(docs.items(), key=lambda x: -x[1])


def top_of(run: Run, depth: int = DEPTH) -> Run:
    """Each query's best ``depth`` documents of ``run``."""
    return {q: dict(_ranked(docs)[:depth]) for q, docs in run.items()}


def bm25_run(data: BeirData, depth: int = DEPTH) -> Run:
    from ..retrieval.bm25 import BM25Index

    doc_ids = list(data.corpus)
    bm25 = BM25Index.build([data.doc_text(d) for d in doc_ids])
    qids = list(data.queries)
    scores, ids = bm25.search([data.queries[q] for q in qids], depth)
    return {
        q: {doc_ids[i]: float(s) for s, i in zip(srow, irow) if i >= 0} for q, srow, irow in zip(qids, scores, ids)
    }


def fuse(dense: Run, sparse: Run, depth: int = DEPTH, fusion: str = "convex", alpha: float | None = None) -> Run:
    """Fuse a dense and a BM25 document run the way ``sfp-rag query --hybrid`` fuses chunk runs (``fusion``: convex,
    the default, minmax or rrf; ``alpha`` the dense weight, None: the fusion's tuned one). The first ``depth``
    documents of each run are its candidates; further dense entries (``dense_run(also=...)``) are cosines to look
    up for BM25's candidates."""
    from ..retrieval.fusion import check_fusion, fuse_scores

    check_fusion(fusion, alpha)
    out: Run = {}
    for q in dense.keys() | sparse.keys():
        ranked = _ranked(dense.get(q, {}))
        candidates, lookup = dict(ranked[:depth]), dict(ranked[depth:])
        bm25 = dict(_ranked(sparse.get(q, {}))[:depth])
        out[q] = dict(fuse_scores(candidates, bm25, fusion, alpha, lookup)[:depth])
    return out


def per_query_scores(qrels: dict[str, dict[str, int]], run: Run, measures: set[str]) -> dict[str, dict[str, float]]:
    """pytrec_eval ``measures`` of every judged query (a query with no results scores 0): ``{qid: {measure: x}}``."""
    require("pytrec_eval", "IR metrics", "pip install 'sfp-rag[eval]' (or: pip install pytrec-eval-terrier)")
    import pytrec_eval

    full = {q: run.get(q, {}) or {"__none__": 0.0} for q in qrels}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(full)


def score_run(qrels: dict[str, dict[str, int]], run: Run) -> dict[str, float]:
    """The four metrics x100, averaged over the judged queries (a query with no results scores 0)."""
    per_query = per_query_scores(qrels, run, {"ndcg_cut.10", "recall.100", "map_cut.100"})
    rr = per_query_scores(qrels, top_of(run, 10), {"recip_rank"})
    out = {}
    for label, key in METRICS.items():
        source = rr if key == "recip_rank" else per_query
        out[label] = 100 * float(np.mean([source[q][key] for q in qrels]))
    return out


def evaluate_beir(
    folder: str | Path,
    systems: dict[str, Any],
    split: str = "test",
    hybrid: list[str] | None = None,
    chunk_size: int = 256,
    chunk_overlap: int = 32,
    batch_size: int = 32,
    engine=None,
    fusion: str = "convex",
    alpha: float | None = None,
    max_chunks: int | None = None,
    max_queries: int | None = None,
    centering: bool = True,
) -> dict[str, Any]:
    """Score each system on one BEIR dataset.

    Args:
        systems: label -> an encoder (``SFPEncoder``/``MeanPoolEncoder``), a function that builds one (called when
            its turn comes, so only one model is in memory), or the string "bm25".
        hybrid: labels of dense systems to also fuse with BM25 (added as "<label>+bm25").
        engine: ``engine(encoder) -> embedder`` for the document embeddings of sfp encoders (e.g. Ray); None: here.
        fusion, alpha: how the hybrids fuse (see ``retrieval.fusion``; alpha None: its tuned default).
        max_chunks, max_queries: cheaper tuning sweeps: each document's first N chunks, a fixed subset of the queries
            (both recorded in the result; such numbers are not comparable with full ones).
        centering: center the sfp systems' dense side on the corpus, as ``sfp-rag index`` does by default (the
            peer encoders are scored as they come).
    """
    from ..retrieval.fusion import check_fusion, resolve_alpha

    check_fusion(fusion, alpha)
    data = subset_queries(load_beir(folder, split), max_queries)
    logger.info("%s: %d documents, %d %s queries", data.name, len(data.corpus), len(data.queries), split)
    runs: dict[str, Run] = {}
    stats: dict[str, dict] = {}
    bm25_label = next((label for label, system in systems.items() if system == "bm25"), "BM25")
    lookups: Run | None = None
    if hybrid:  # the dense runs of the hybrids also score BM25's candidates (convex fusion looks their cosines up)
        t = time.perf_counter()
        runs[bm25_label] = lookups = bm25_run(data)
        stats[bm25_label] = {"total_s": round(time.perf_counter() - t, 1)}
    for label, system in systems.items():
        t = time.perf_counter()
        if system == "bm25":
            if label not in runs:
                runs[label] = bm25_run(data)
                stats[label] = {"total_s": round(time.perf_counter() - t, 1)}
        else:
            encoder = system() if callable(system) and not hasattr(system, "encode") else system  # lazy: one at a time
            sfp = hasattr(encoder, "prompt_tokenizer")  # an SFP encoder, not a peer
            embedder = engine(encoder) if engine is not None and sfp else None
            runs[label], stats[label] = dense_run(
                encoder, data, chunk_size, chunk_overlap, batch_size=batch_size, embedder=embedder,
                max_chunks=max_chunks, also=lookups if label in (hybrid or []) else None,
                centering=centering and sfp,
            )  # fmt: skip
            if hasattr(embedder, "close"):
                embedder.close()
            del encoder
    for label in hybrid or []:
        runs[f"{label}+bm25"] = fuse(runs[label], runs[bm25_label], fusion=fusion, alpha=alpha)
    order = [label for label in systems if label in runs] + [label for label in runs if label not in systems]
    scores = {label: score_run(data.qrels, top_of(runs[label])) for label in order}
    return {
        "kind": "beir",
        "dataset": data.name,
        "split": split,
        "documents": len(data.corpus),
        "queries": len(data.queries),
        "scores": scores,
        "stats": stats,
        "chunking": {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "max_chunks": max_chunks},
        "max_queries": max_queries,
        "centering": centering,
        "fusion": {"method": fusion, "alpha": resolve_alpha(fusion, alpha)} if hybrid else None,
    }


def format_beir_table(scores: dict[str, dict[str, float]]) -> str:
    lines = ["| system | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for label, s in scores.items():
        lines.append(f"| {label} | " + " | ".join(f"{s[m]:.2f}" for m in METRICS) + " |")
    return "\n".join(lines)
