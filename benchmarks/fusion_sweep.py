"""Choose the hybrid fusion on a tuning split: convex weight alpha (dense share) and RRF, scored by nDCG@10.

The dense and BM25 runs are computed once (document embeddings come from the evaluation cache, so a model that was
evaluated before is not re-embedded), then every fusion is scored on the same runs. Run it on a split meant for
tuning (NFCorpus `train`), never on test qrels; the chosen alpha becomes `fusion.DEFAULT_ALPHA`.

    python benchmarks/fusion_sweep.py --data ../shared/data/beir/nfcorpus --split train
    python benchmarks/fusion_sweep.py --data ../shared/data/beir/nfcorpus --split test --alpha 0.3   # report only

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
    parser.add_argument("--alpha", type=float, nargs="*", default=[i / 10 for i in range(11)])
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.evaluation.beir import bm25_run, dense_run, fuse, load_beir, score_run

    started = time.perf_counter()
    data = load_beir(args.data, args.split)
    options = {"query_template": args.query_template} if args.query_template else {}
    encoder = SFPEncoder.from_pretrained(args.model, **options)
    dense, stats = dense_run(encoder, data, args.chunk_size, 32)
    sparse = bm25_run(data)
    rows = {"dense": score_run(data.qrels, dense), "bm25": score_run(data.qrels, sparse)}
    rows["rrf"] = score_run(data.qrels, fuse(dense, sparse, fusion="rrf"))
    for alpha in args.alpha:
        rows[f"convex alpha={alpha:.2f}"] = score_run(data.qrels, fuse(dense, sparse, fusion="convex", alpha=alpha))
    best = max((k for k in rows if k.startswith("convex")), key=lambda k: rows[k]["nDCG@10"])
    result = {
        "kind": "fusion-sweep",
        "dataset": data.name,
        "split": args.split,
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "encoder": encoder.identity(),
        "scores": rows,
        "best_convex": best,
        "embed": stats,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    print(f"{data.name} {args.split}: {len(data.queries)} queries ({result['machine']['cpu']})")
    print("| fusion | nDCG@10 | Recall@100 |\n|---|---|---|")
    for name, s in rows.items():
        mark = " **(best convex)**" if name == best else ""
        print(f"| {name}{mark} | {s['nDCG@10']:.2f} | {s['Recall@100']:.2f} |")
    out = Path(args.out or RESULTS / f"fusion_{data.name}_{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
