"""What a pseudo-query file holds: how many queries pass the checks, how many survive the BM25 round trip at each
depth (``--pseudo-query-round-trip``), and how uniform they are (the share of the commonest openings). Reads a
``pseudo_queries.jsonl`` that ``sfp-rag train --pseudo-queries N`` (or ``generate_pairs``) wrote for a corpus; no
qrels, no model.

    python benchmarks/pseudo_query_stats.py --corpus runs/s7/nfcorpus_untitled.jsonl \
        --queries runs/s7/q_gemma.jsonl --label gemma3-270m

Writes benchmarks/results/pseudo_query_stats_<label>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from _common import RESULTS, machine, safe_name

from sfp_rag.training.data import load_texts
from sfp_rag.training.query_generation import generate_pairs, passages_of, read_records


def openings(queries: list[str], words: int) -> list[tuple[str, float]]:
    """The five commonest first ``words`` words (lowercased) and their shares of ``queries``."""
    counts = Counter(" ".join(q.lower().split()[:words]) for q in queries)
    return [(k, round(v / len(queries), 4)) for k, v in counts.most_common(5)] if queries else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="the corpus the queries were written for (as training reads it)")
    ap.add_argument("--queries", required=True, help="a pseudo_queries.jsonl")
    ap.add_argument("--label", required=True, help="names the result file (e.g. the generator)")
    ap.add_argument("--depths", default="1,3,10")
    ap.add_argument("--text-field", default="text")
    args = ap.parse_args()
    texts = load_texts(args.corpus, text_field=args.text_field, units="documents")
    path = Path(args.queries)
    written = len(read_records(path))

    def never():
        raise SystemExit(f"{path} does not hold the first {written} passages (seed 0) of {args.corpus}")

    # the file read as training reads it (the same passages, checks and corpus test), at each depth
    rows, results = [], {}
    for depth in [0, *(int(d) for d in args.depths.split(","))]:
        t0 = time.perf_counter()
        results[depth] = res = generate_pairs(texts, path, written, never, round_trip=depth)
        kept = len(res.pairs)
        rows.append({"round_trip": depth, "kept": kept, "share_of_written": round(kept / written, 4),
                     "seconds": round(time.perf_counter() - t0, 2),
                     "openings_3_words": openings([q for q, _ in res.pairs], 3)})  # fmt: skip
    checked = results[0].pairs
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "corpus": args.corpus,
        "queries": args.queries,
        "passages_in_corpus": len(passages_of(texts)),
        "written": written,
        "rejected_by_checks": dict(Counter(results[0].rejected).most_common()),
        "distinct_kept_queries": len({q.lower() for q, _ in checked}),
        "rows": rows,
        "examples": [q for q, _ in checked[:10]],
    }
    for row in rows:
        top = ", ".join(f"'{k}' {v:.0%}" for k, v in row["openings_3_words"][:3])
        print(f"round trip {row['round_trip'] or 'off'}: {row['kept']} kept of {written}; openings: {top}")
    out = RESULTS / f"pseudo_query_stats_{safe_name(args.label)}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
