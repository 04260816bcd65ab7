"""Choose the hybrid fusion on a tuning split: the dense weight alpha of each convex fusion (`convex`, the default
TM2C2, and `minmax`) and RRF, scored by nDCG@10.

The dense and BM25 runs are computed once (document embeddings come from the evaluation cache, so a model that was
evaluated before is not re-embedded; the dense run also scores BM25's candidates, as `query --hybrid` does), then
every fusion is scored on the same runs. Run it on a split meant for tuning (NFCorpus `train`), never on test qrels;
the chosen weights become `fusion.DEFAULT_ALPHAS`.

    python benchmarks/fusion_sweep.py --data ../shared/data/beir/nfcorpus --split train

Writes benchmarks/results/fusion_<dataset>_<split>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import RESULTS, machine


def paired_bootstrap(qrels, run_a, run_b, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean per-query nDCG@10 difference (x100) of two runs with a 95% paired-bootstrap interval."""
    import numpy as np

    from sfp_rag.evaluation.beir import per_query_scores

    def per_query(run):
        scores = per_query_scores(qrels, run, {"ndcg_cut.10"})
        return np.array([scores[q]["ndcg_cut_10"] for q in sorted(qrels)])

    diff = 100 * (per_query(run_a) - per_query(run_b))
    rng = np.random.default_rng(seed)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(resamples)]
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "better": int((diff > 0).sum()),
        "worse": int((diff < 0).sum()),
        "resamples": resamples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR dataset folder")
    parser.add_argument("--split", default="train", help="qrels split (tune on train)")
    parser.add_argument("--model", default=None, help="encoder [default: the shipped default]")
    parser.add_argument("--query-template", default=None, help="queries' prompt [default: the model's]")
    parser.add_argument("--alpha", type=float, nargs="*", default=[i / 20 for i in range(21)])
    parser.add_argument("--fusions", nargs="*", default=["convex", "minmax"], help="convex fusions to sweep")
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--no-centering", action="store_true", help="score the uncentered dense side")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.evaluation.beir import bm25_run, dense_run, fuse, load_beir, score_run, top_of

    started = time.perf_counter()
    data = load_beir(args.data, args.split)
    options = {"query_template": args.query_template} if args.query_template else {}
    encoder = SFPEncoder.from_pretrained(args.model, **options)
    sparse = bm25_run(data)
    dense, stats = dense_run(encoder, data, args.chunk_size, 32, also=sparse, centering=not args.no_centering)
    rows = {"dense": score_run(data.qrels, top_of(dense)), "bm25": score_run(data.qrels, sparse)}
    rows["rrf"] = score_run(data.qrels, fuse(dense, sparse, fusion="rrf"))
    best, best_run = {}, {}  # per fusion: the best weight's row name and its run (kept for the bootstrap)
    for fusion in args.fusions:
        for alpha in args.alpha:
            name = f"{fusion} alpha={alpha:.2f}"
            run = fuse(dense, sparse, fusion=fusion, alpha=alpha)
            rows[name] = score_run(data.qrels, run)
            if fusion not in best or rows[name]["nDCG@10"] > rows[best[fusion]]["nDCG@10"]:
                best[fusion], best_run[fusion] = name, run
    comparison = None
    if len(best) > 1:  # the best weight of the first fusion against the best of the second, query by query
        first, second = list(best)[:2]
        comparison = paired_bootstrap(data.qrels, best_run[first], best_run[second])
        comparison.update(a=best[first], b=best[second])
    result = {
        "kind": "fusion-sweep",
        "dataset": data.name,
        "split": args.split,
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "encoder": encoder.identity(),
        "centering": not args.no_centering,
        "scores": rows,
        "best": best,
        "paired_bootstrap": comparison,
        "embed": stats,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    print(f"{data.name} {args.split}: {len(data.queries)} queries ({result['machine']['cpu']})")
    print("| fusion | nDCG@10 | Recall@100 |\n|---|---|---|")
    for name, s in rows.items():
        mark = " **(best)**" if name in best.values() else ""
        print(f"| {name}{mark} | {s['nDCG@10']:.2f} | {s['Recall@100']:.2f} |")
    out = Path(args.out or RESULTS / f"fusion_{data.name}_{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if comparison:
        c = comparison
        print(
            f"{c['a']} - {c['b']}: {c['mean']:+.2f} nDCG@10, 95% interval {c['low']:+.2f} to {c['high']:+.2f} "
            f"({c['better']} queries better, {c['worse']} worse; paired bootstrap, {c['resamples']} resamples)"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
