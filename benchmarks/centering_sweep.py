"""Choose the corpus centering on a tuning split: dense (and TM2C2 hybrid) nDCG@10 without centering and with
k = 0, 1, 3, 5, 8, 10 top components removed per side, plus a paired bootstrap of the chosen k against no centering.

Document embeddings come from the evaluation cache (a model evaluated before is not re-embedded); each centered
run embeds its 1,500 pseudo-queries and the queries again (about a minute here). Run it on NFCorpus `train`, never
on test qrels; the chosen k becomes `retrieval.centering.DEFAULT_COMPONENTS`.

    python benchmarks/centering_sweep.py --data ../shared/data/beir/nfcorpus --split train

Writes benchmarks/results/centering_<dataset>_<split>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import RESULTS, machine
from fusion_sweep import paired_bootstrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR dataset folder")
    parser.add_argument("--split", default="train", help="qrels split (tune on train)")
    parser.add_argument("--model", default=None, help="encoder [default: the shipped default]")
    parser.add_argument("--components", type=int, nargs="*", default=[0, 1, 3, 5, 8, 10])
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.evaluation.beir import bm25_run, dense_run, fuse, load_beir, score_run, top_of
    from sfp_rag.retrieval.centering import DEFAULT_COMPONENTS

    started = time.perf_counter()
    data = load_beir(args.data, args.split)
    encoder = SFPEncoder.from_pretrained(args.model)
    sparse = bm25_run(data)
    rows, runs = {}, {}
    for k in [None, *args.components]:
        name = "uncentered" if k is None else f"centered k={k}"
        t = time.perf_counter()
        dense, _ = dense_run(encoder, data, args.chunk_size, 32, also=sparse, centering=k is not None, components=k)
        hybrid = fuse(dense, sparse)  # TM2C2 at the default weight
        runs[name] = (top_of(dense), hybrid)
        rows[name] = {
            "dense": score_run(data.qrels, runs[name][0]),
            "hybrid": score_run(data.qrels, hybrid),
            "seconds": round(time.perf_counter() - t, 1),
        }
        print(f"{name}: dense {rows[name]['dense']['nDCG@10']:.2f}, hybrid {rows[name]['hybrid']['nDCG@10']:.2f}")
    chosen, base = f"centered k={DEFAULT_COMPONENTS}", "uncentered"
    bootstrap = None
    if chosen in runs:
        bootstrap = {
            side: paired_bootstrap(data.qrels, runs[chosen][i], runs[base][i]) | {"a": chosen, "b": base}
            for i, side in enumerate(("dense", "hybrid"))
        }
    result = {
        "kind": "centering-sweep",
        "dataset": data.name,
        "split": args.split,
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "encoder": encoder.identity(),
        "scores": rows,
        "paired_bootstrap": bootstrap,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    print(f"{data.name} {args.split}: {len(data.queries)} queries ({result['machine']['cpu']})")
    print("| centering | dense nDCG@10 | dense Recall@100 | hybrid nDCG@10 |\n|---|---|---|---|")
    for name, r in rows.items():
        dense, hybrid = r["dense"], r["hybrid"]
        print(f"| {name} | {dense['nDCG@10']:.2f} | {dense['Recall@100']:.2f} | {hybrid['nDCG@10']:.2f} |")
    for side, c in (bootstrap or {}).items():
        print(
            f"{side}: {c['a']} - {c['b']}: {c['mean']:+.2f} nDCG@10, 95% interval {c['low']:+.2f} to {c['high']:+.2f} "
            f"({c['better']} queries better, {c['worse']} worse)"
        )
    out = Path(args.out or RESULTS / f"centering_{data.name}_{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
