"""The Ray engine against the in-process path on the same corpus: throughput and the engine's overhead, and whether
the vectors agree (cosine row by row).

    python benchmarks/ray_vs_local.py --docs 2000                 # the first N SciFact documents, default model
    python benchmarks/ray_vs_local.py --docs 2000 --corpus wiki   # the first N Wikipedia paragraphs (shorter)
    python benchmarks/ray_vs_local.py --docs 500 --workers 1,2

Each variant builds a fresh index of the same documents (dense-only, so only embedding differs). Writes
benchmarks/results/ray_vs_local_<docs>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, machine

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPORA = {"scifact": DATA / "beir" / "scifact" / "corpus.jsonl.gz", "wiki": DATA / "wiki_passages.jsonl.gz"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="scifact")
    args = parser.parse_args()

    from sfp_rag import SFPEncoder, build_index
    from sfp_rag.distributed.ray_engine import RayEmbedder
    from sfp_rag.retrieval.index_folder import Collection

    work = Path(tempfile.mkdtemp(prefix="sfp-ray-"))
    docs = work / "docs"
    docs.mkdir()
    with gzip.open(CORPORA[args.corpus], "rt", encoding="utf-8") as f:
        for i, line in zip(range(args.docs), f):
            d = json.loads(line)
            name = d.get("_id", d.get("id"))
            (docs / f"{name}.txt").write_text(f"{d.get('title', '')}\n\n{d['text']}", encoding="utf-8")
    encoder = SFPEncoder.from_pretrained()
    rows = []

    def run(label: str, embedder=None) -> None:
        t = time.perf_counter()
        report = build_index(docs, encoder, work / label, hybrid=False, embedder=embedder, show_progress=False)
        seconds = time.perf_counter() - t
        rows.append({"variant": label, "chunks": report.chunks, "seconds": round(seconds, 1),
                     "chunks_per_s": round(report.chunks / seconds, 2)})  # fmt: skip
        print(rows[-1], flush=True)

    run("in-process")
    reference = Collection.open(work / "in-process").vectors()
    for n in (int(w) for w in args.workers.split(",")):
        t = time.perf_counter()
        embedder = RayEmbedder(encoder, workers=n)
        start = time.perf_counter() - t
        run(f"ray-{n}", embedder)
        embedder.close()
        cos = np.sum(reference * Collection.open(work / f"ray-{n}").vectors(), axis=1)
        rows[-1].update({"ray_start_s": round(start, 1), "min_cosine": round(float(cos.min()), 6),
                         "speed_vs_in_process": round(rows[0]["seconds"] / rows[-1]["seconds"], 3)})  # fmt: skip
        print(rows[-1], flush=True)
    out = RESULTS / f"ray_vs_local_{args.docs}{'' if args.corpus == 'scifact' else '_' + args.corpus}.json"
    result = {"kind": "ray-vs-local", "corpus": args.corpus, "docs": args.docs, "rows": rows, "machine": machine()}
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
