"""How often BM25-mined hard negatives are relevant by the corpus's own qrels (a false-negative rate), on a tuning
split: for each document with a title, its candidates from ``training.hard_negatives.mine_hard_negatives`` (as
``--hard-negatives`` mines them), and the share of (document, candidate) pairs that are both relevant to one query of
the split; the same share for random documents is the floor.

    python benchmarks/hard_negative_overlap.py --data ../shared/data/beir/nfcorpus --split train

Writes benchmarks/results/hard_negative_overlap_<dataset>_<split>.json. Reads no test qrels unless told to.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
from _common import RESULTS, machine

from sfp_rag.evaluation.beir import load_beir
from sfp_rag.training.hard_negatives import mine_hard_negatives


def shared_query_share(candidates, doc_ids, relevant_to) -> tuple[float, int]:
    """Share of (document, candidate) pairs with a relevant query in common, over documents judged in the split."""
    pairs = shared = 0
    for i, cands in enumerate(candidates):
        mine = relevant_to.get(doc_ids[i])
        if not mine:
            continue
        for j in cands:
            pairs += 1
            shared += bool(mine & relevant_to.get(doc_ids[int(j)], set()))
    return (shared / pairs if pairs else float("nan")), pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="BEIR dataset folder")
    ap.add_argument("--split", default="train")
    ap.add_argument("--settings", default="20:1.0,20:0.9,20:0.7,20:0.5,5:0.9", help="depth:guard pairs")
    args = ap.parse_args()
    data = load_beir(args.data, args.split)
    doc_ids = list(data.corpus)
    units = []
    for doc_id in doc_ids:  # as training reads a BEIR corpus: "title\ntext", whitespace-normalised
        title, text = (" ".join(part.split()) for part in data.corpus[doc_id])
        units.append(f"{title}\n{text}" if title else text)
    relevant_to: dict[str, set[str]] = defaultdict(set)
    for query, judged in data.qrels.items():
        for doc_id, grade in judged.items():
            if grade > 0:
                relevant_to[doc_id].add(query)
    rng = np.random.default_rng(0)
    floor, n = shared_query_share([rng.integers(0, len(units), 20) for _ in units], doc_ids, relevant_to)
    rows = [{"negatives": "random documents (20 each)", "shared_query_share": round(floor, 4), "pairs": n}]
    for setting in args.settings.split(","):
        depth, guard = int(setting.split(":")[0]), float(setting.split(":")[1])
        t0 = time.perf_counter()
        mined = mine_hard_negatives(units, depth=depth, guard=guard)
        share, n = shared_query_share(mined.candidates, doc_ids, relevant_to)
        rows.append({"negatives": f"BM25 depth {depth}, guard {guard}", "shared_query_share": round(share, 4),
                     "pairs": n, **mined.stats(), "mine_s": round(time.perf_counter() - t0, 2)})  # fmt: skip
    for row in rows:
        print(f"{row['negatives']:<32} {100 * row['shared_query_share']:5.1f}%  ({row['pairs']} pairs)")
    out = RESULTS / f"hard_negative_overlap_{data.name}_{args.split}.json"
    result = {"dataset": data.name, "split": args.split, "documents": len(units), "judged_queries": len(data.qrels),
              "rows": rows, "machine": machine()}  # fmt: skip
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
