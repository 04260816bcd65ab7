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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR dataset folder")
    parser.add_argument("--split", default="train", help="qrels split (tune on train)")
    parser.add_argument("--model", default=None, help="encoder [default: the shipped default]")
    parser.add_argument("--query-template", default=None, help="queries' prompt [default: the model's]")
    parser.add_argument("--alpha", type=float, nargs="*", default=[i / 20 for i in range(21)])
    parser.add_argument("--fusions", nargs="*", default=["convex", "minmax"], help="convex fusions to sweep")
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.evaluation.beir import bm25_run, dense_run, fuse, load_beir, score_run, top_of

    started = time.perf_counter()
    data = load_beir(args.data, args.split)
    options = {"query_template": args.query_template} if args.query_template else {}
    encoder = SFPEncoder.from_pretrained(args.model, **options)
    sparse = bm25_run(data)
    dense, stats = dense_run(encoder, data, args.chunk_size, 32, also=sparse)
    rows = {"dense": score_run(data.qrels, top_of(dense)), "bm25": score_run(data.qrels, sparse)}
    rows["rrf"] = score_run(data.qrels, fuse(dense, sparse, fusion="rrf"))
    best = {}
    for fusion in args.fusions:
        for alpha in args.alpha:
            rows[f"{fusion} alpha={alpha:.2f}"] = score_run(
                data.qrels, fuse(dense, sparse, fusion=fusion, alpha=alpha)
            )
        best[fusion] = max((k for k in rows if k.startswith(f"{fusion} ")), key=lambda k: rows[k]["nDCG@10"])
    result = {
        "kind": "fusion-sweep",
        "dataset": data.name,
        "split": args.split,
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "encoder": encoder.identity(),
        "scores": rows,
        "best": best,
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
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
