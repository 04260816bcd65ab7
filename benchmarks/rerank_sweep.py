"""Measure query-likelihood re-ranking (UPR) over the hybrid's top k, on a tuning split: nDCG@10 of the hybrid, of
the re-ranked top k (the LM's order alone, and its min-max scores mixed with the hybrid's at weight w), and the
seconds it costs per query.

The LM scores the top ``max(--top)`` documents of each query once; every smaller k and every weight is scored from
those scores. A document is read as its title and text cut to ``--passage-tokens`` tokens. Dense embeddings come
from the evaluation cache where the model was evaluated before. Choose k and w on NFCorpus ``--split train`` (a fixed
query subset with ``--max-queries``), then score the test sets once with the chosen pair (``--top K --weights W``).

    python benchmarks/rerank_sweep.py --data ../shared/data/beir/nfcorpus --split train --max-queries 300

Writes benchmarks/results/rerank_<dataset>_<split>_<reranker>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, machine, safe_name
from fusion_sweep import paired_bootstrap


def minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def reranked(first: dict[str, float], lm: dict[str, float], k: int, weight: float) -> dict[str, float]:
    """The run with its top ``k`` re-ordered by ``weight`` x min-max(LM) + (1 - weight) x min-max(first stage),
    placed above the rest (which keep their order)."""
    ranked = sorted(first.items(), key=lambda x: -x[1])
    top, rest = ranked[:k], ranked[k:]
    if not top:
        return {}
    ids = [d for d, _ in top]
    mixed = weight * minmax(np.array([lm[d] for d in ids])) + (1 - weight) * minmax(np.array([s for _, s in top]))
    floor = 1.0 + (rest[0][1] if rest else 0.0)  # the re-ranked top stays above the rest, which keep their scores
    return {**{d: floor + float(m) for d, m in zip(ids, mixed)}, **dict(rest)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR dataset folder")
    parser.add_argument("--split", default="train", help="qrels split (tune on train)")
    parser.add_argument("--model", default=None, help="encoder [default: the shipped default]")
    parser.add_argument("--reranker", default=None, help="causal LM [default: gemma3-270m, no adapter]")
    parser.add_argument("--top", type=int, nargs="*", default=[10, 20, 30], help="re-rank the top k (each k)")
    parser.add_argument("--weights", type=float, nargs="*", default=[1.0, 0.75, 0.5, 0.25], help="LM weight w")
    parser.add_argument("--max-queries", type=int, default=None, help="a fixed subset: the first N query ids")
    parser.add_argument("--passage-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.evaluation.beir import bm25_run, dense_run, fuse, load_beir, score_run, subset_queries, top_of
    from sfp_rag.retrieval.rerank import DEFAULT_RERANKER, QueryLikelihoodReranker

    started = time.perf_counter()
    data = subset_queries(load_beir(args.data, args.split), args.max_queries)
    encoder = SFPEncoder.from_pretrained(args.model)
    sparse = bm25_run(data)
    dense, stats = dense_run(encoder, data, args.chunk_size, 32, also=sparse, centering=True)
    identity = encoder.identity()
    del encoder
    hybrid = fuse(dense, sparse)  # the default fusion (TM2C2 at its tuned weight), as `query` fuses
    reranker = QueryLikelihoodReranker.load(args.reranker, batch_size=args.batch_size,
                                            passage_tokens=args.passage_tokens)  # fmt: skip
    depth = max(args.top)
    lm: dict[str, dict[str, float]] = {}
    t = time.perf_counter()
    for i, qid in enumerate(sorted(data.queries)):
        docs = [d for d, _ in sorted(hybrid[qid].items(), key=lambda x: -x[1])[:depth]]
        scores = reranker.score(data.queries[qid], [data.doc_text(d) for d in docs])
        lm[qid] = dict(zip(docs, scores.tolist()))
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(data.queries)} queries, {(time.perf_counter() - t) / (i + 1):.2f} s each", flush=True)
    rerank_s = time.perf_counter() - t
    rows = {"hybrid": score_run(data.qrels, top_of(hybrid)), "dense": score_run(data.qrels, top_of(dense))}
    runs = {}
    for k in args.top:
        for w in args.weights:
            name = f"top {k}, w={w:.2f}"
            runs[name] = {q: reranked(hybrid[q], lm[q], k, w) for q in data.queries}
            rows[name] = score_run(data.qrels, runs[name])
    best = max(runs, key=lambda n: rows[n]["nDCG@10"])
    comparison = paired_bootstrap(data.qrels, runs[best], top_of(hybrid))
    comparison.update(a=best, b="hybrid")
    result = {
        "kind": "rerank-sweep",
        "dataset": data.name,
        "split": args.split,
        "queries": len(data.queries),
        "max_queries": args.max_queries,
        "documents": len(data.corpus),
        "encoder": identity,
        "reranker": args.reranker or DEFAULT_RERANKER,
        "passage_tokens": args.passage_tokens,
        "scores": rows,
        "best": best,
        "paired_bootstrap": comparison,
        "rerank_seconds": round(rerank_s, 1),
        "seconds_per_query": round(rerank_s / len(data.queries), 3),
        "pairs_per_query": depth,
        "embed": stats,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    print(f"{data.name} {args.split}: {len(data.queries)} queries ({result['machine']['cpu']}); "
          f"{result['seconds_per_query']} s per query to score the top {depth}")  # fmt: skip
    print("| run | nDCG@10 | Recall@100 |\n|---|---|---|")
    for name, s in rows.items():
        print(f"| {name}{' **(best)**' if name == best else ''} | {s['nDCG@10']:.2f} | {s['Recall@100']:.2f} |")
    c = comparison
    print(f"{best} - hybrid: {c['mean']:+.2f} nDCG@10, 95% interval {c['low']:+.2f} to {c['high']:+.2f}")
    name = f"rerank_{data.name}_{args.split}_{safe_name(args.reranker or DEFAULT_RERANKER)}.json"
    out = Path(args.out or RESULTS / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
