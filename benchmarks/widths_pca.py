"""Shorter vectors without retraining: plain truncation against truncation after a PCA rotation, on a tuning split.

``truncate_dim`` keeps a vector's first N dimensions. A model not trained for it (no ``--matryoshka-dims``) spreads
its information over all 640, so the first N keep little. An orthogonal rotation changes no cosine at full width;
rotated onto the corpus's principal directions, the first N dimensions hold the most variance. This script measures
both on one BEIR split, from the cached corpus embeddings that ``sfp-rag eval beir`` wrote (the same chunking), with
the rotation fitted on the corpus's chunk vectors (never on queries):

- ``plain``: the first N dimensions, renormalised (what ``truncate_dim`` does);
- ``pca``: rotate onto the corpus's principal directions, then the first N;
- ``pca-centered``: subtract the corpus mean first, then as ``pca`` (queries get the same shift);
- ``pca-wiki``: the rotation fitted instead on ``--fit-texts`` Wikipedia passages (``wiki_passages.jsonl.gz``,
  tuning data): a rotation that ships with a model, for vectors with no corpus (``/v1/embeddings``).

No corpus centering (``retrieval.centering``) is applied to any row, so the rows compare with each other, not with
``eval beir``'s centered numbers.

    python benchmarks/widths_pca.py --data ../shared/data/beir/nfcorpus --split train --max-chunks 1 --chunk-size 128
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
from _common import machine

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--model", default=None)
    parser.add_argument("--widths", default="64,128,256")
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--max-chunks", type=int, default=1)
    parser.add_argument("--fit-texts", type=int, default=2000, help="Wikipedia passages for pca-wiki (0: skip)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from sfp_rag._utils import cache_dir
    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.embedding.pooling import normalize_numpy
    from sfp_rag.evaluation.beir import load_beir, score_run
    from sfp_rag.retrieval.chunking import chunk_text, make_splitter
    from sfp_rag.retrieval.vector_store import ShardedVectorStore, embed_with_store

    encoder = SFPEncoder.from_pretrained(args.model)
    data = load_beir(args.data, args.split)
    splitter = make_splitter(lambda s: encoder.tokenizer.encode(s, add_special_tokens=False), args.chunk_size, 32)
    owners, texts = [], []
    for doc_id in data.corpus:
        for chunk in (chunk_text(splitter, doc_id, data.doc_text(doc_id)) or [])[: args.max_chunks]:
            owners.append(doc_id)
            texts.append(chunk.text)
    fingerprint = encoder.document_fingerprint()
    store = ShardedVectorStore(cache_dir() / "embeddings" / fingerprint, encoder.dim)
    t = time.perf_counter()
    docs = embed_with_store(texts, encoder.encode_documents, store, fingerprint, group_size=1024)
    qids = list(data.queries)
    queries = encoder.encode_queries([data.queries[q] for q in qids])
    embed_s = time.perf_counter() - t

    def principal(vectors: np.ndarray) -> np.ndarray:
        """(D, D) orthogonal: the principal directions of ``vectors``, largest variance first, as columns."""
        _, _, vt = np.linalg.svd(vectors - vectors.mean(axis=0), full_matrices=False)
        return vt.T

    mean = docs.mean(axis=0)
    rotation = principal(docs)

    def run_of(d: np.ndarray, q: np.ndarray) -> dict:
        scores = normalize_numpy(q) @ normalize_numpy(d).T  # (Q, C)
        run = {}
        for qid, row in zip(qids, scores):
            best: dict[str, float] = {}
            for i in np.argsort(-row)[:1000]:
                best.setdefault(owners[i], float(row[i]))
                if len(best) == 100:
                    break
            run[qid] = best
        return run

    widths = [int(w) for w in args.widths.split(",")] + [encoder.dim]
    variants = {
        "plain": (docs, queries),
        "pca": (docs @ rotation, queries @ rotation),
        "pca-centered": ((docs - mean) @ rotation, (queries - mean) @ rotation),
    }
    if args.fit_texts:
        passages = []
        with gzip.open(SHARED / "wiki_passages.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                passages.append(f"{record['title']}\n\n{record['text']}")
                if len(passages) == args.fit_texts:
                    break
        wiki = principal(encoder.encode_documents(passages))
        variants["pca-wiki"] = (docs @ wiki, queries @ wiki)
    results: dict[str, dict[str, float]] = {}
    for name, (d, q) in variants.items():
        for w in widths:
            results[f"{name} {w}d"] = score_run(data.qrels, run_of(d[:, :w], q[:, :w]))
            print(f"{name:13s} {w:4d}d  nDCG@10 {results[f'{name} {w}d']['nDCG@10']:.2f}", flush=True)
    out = {
        "benchmark": "widths_pca",
        "dataset": data.name,
        "split": args.split,
        "chunking": {"chunk_size": args.chunk_size, "max_chunks": args.max_chunks},
        "encoder": encoder.identity(),
        "chunks": len(texts),
        "queries": len(qids),
        "embed_s": round(embed_s, 1),
        "fit_texts": args.fit_texts,
        "scores": results,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    default = Path(__file__).parent / "results" / "ablation" / f"widths_pca_{data.name}_{args.split}.json"
    path = Path(args.out) if args.out else default
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
