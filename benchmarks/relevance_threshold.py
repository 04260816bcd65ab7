"""Where to put a relevance threshold: the top hit's cosine and fused score for questions the corpus answers and
for questions it does not.

20 in-domain questions about examples/docs (benchmarks/data/ask_questions.jsonl, each with the file that answers it)
and 20 off-topic ones (benchmarks/data/off_topic_questions.txt: cooking, sport, travel, ...). For each: the top hybrid
hit's fused score and cosine, and the best cosine over the index (dense top 1). Prints the quantiles of each and the
threshold on each score that separates the two sets best (the midpoint of the best split).

    python benchmarks/relevance_threshold.py            # writes benchmarks/results/relevance_threshold.json

A threshold depends on the corpus and the model: rerun it with your own questions (--questions, --off-topic) on
your own index (--docs) before relying on one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _common import RESULTS, machine

HERE = Path(__file__).resolve().parent


def best_split(inside: list[float], outside: list[float]) -> dict:
    """The threshold (midpoint between two sorted scores) that classifies the most questions right."""
    values = sorted(set(inside) | set(outside))
    cuts = [(a + b) / 2 for a, b in zip(values, values[1:])] or values
    best = max(cuts, key=lambda t: sum(x >= t for x in inside) + sum(x < t for x in outside))
    right = sum(x >= best for x in inside) + sum(x < best for x in outside)
    return {"threshold": round(best, 4), "right": right, "of": len(inside) + len(outside)}


def quantiles(values: list[float]) -> dict:
    return {q: round(float(np.quantile(values, p)), 4) for q, p in (("min", 0), ("p50", 0.5), ("max", 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", default=str(HERE.parent / "examples" / "docs"))
    parser.add_argument("--questions", default=str(HERE / "data" / "ask_questions.jsonl"))
    parser.add_argument("--off-topic", default=str(HERE / "data" / "off_topic_questions.txt"))
    parser.add_argument("--home", default=None, help="index home to build in [default: a temporary folder]")
    parser.add_argument("--out", default=str(RESULTS / "relevance_threshold.json"))
    args = parser.parse_args()

    from sfp_rag import Index

    inside_q = [json.loads(line)["question"] for line in Path(args.questions).read_text().splitlines() if line]
    outside_q = [line.strip() for line in Path(args.off_topic).read_text().splitlines() if line.strip()]
    home = Path(args.home or tempfile.mkdtemp(prefix="sfp-threshold-"))
    index = Index.create(home / "docs", docs=args.docs, if_exists="update")
    rows = {}
    for label, questions in (("in_domain", inside_q), ("off_topic", outside_q)):
        hybrid = [hits[0] for hits in index.search(questions, k=1)]
        dense = [hits[0] for hits in index.search(questions, k=1, mode="dense")]
        rows[label] = [
            {"question": q, "source": h.source, "fused": round(h.score, 4), "cosine": round(h.cosine, 4),
             "best_cosine": round(d.cosine, 4)}
            for q, h, d in zip(questions, hybrid, dense)
        ]  # fmt: skip
    summary = {}
    for score in ("fused", "cosine", "best_cosine"):
        inside = [r[score] for r in rows["in_domain"]]
        outside = [r[score] for r in rows["off_topic"]]
        split = best_split(inside, outside)
        summary[score] = {"in_domain": quantiles(inside), "off_topic": quantiles(outside), **split}
    result = {
        "kind": "relevance-threshold",
        "index": index.info()["model"],
        "centered": index.info().get("centered"),
        "command": "python benchmarks/relevance_threshold.py",
        "summary": summary,
        "rows": rows,
        "machine": machine(),
    }
    print(json.dumps(summary, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
