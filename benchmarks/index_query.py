"""Indexing and query speed on a BEIR corpus, through the same code `sfp-rag index` / `sfp-rag query` run.

1. build: the corpus is written out as one text file per document (title + abstract) and indexed with the default
   model; reports wall time, chunks/s and peak RSS (in a child process, so the RSS is the build's own).
2. cold queries: `sfp-rag query` in a new process each time (what a user waits for), median and p95 of wall time.
3. warm queries: one `Searcher`, many test queries, p50/p95 latency of `search()`.
4. FAISS search alone vs numpy brute force on the index's own vectors.
5. memory (``--memory-docs N``): peak RSS of building an index of N documents and of 4N documents (the 4N are
   distinct texts), to show memory stays flat as the corpus grows.

    python benchmarks/index_query.py --dataset scifact
    python benchmarks/index_query.py --dataset scifact --skip-build --memory-docs 1000
    python benchmarks/index_query.py --dataset scifact --runtimes torch,openvino --out ...   # runtimes compared

Writes benchmarks/results/index_query_<dataset>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import cli_command, machine

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


def export_corpus(dataset: str, folder: Path, limit: int | None = None, copies: int = 1) -> int:
    """Write documents as text files; with ``copies`` > 1 each copy is made distinct by a prefix."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with gzip.open(SHARED / "beir" / dataset / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                break
            doc = json.loads(line)
            for c in range(copies):
                prefix = f"Copy {c}. " if copies > 1 else ""
                (folder / f"{doc['_id']}-{c}.txt").write_text(f"{prefix}{doc['title']}\n\n{doc['text']}", "utf-8")
                n += 1
    return n


def child_build(docs: str, out: str, runtime: str = "auto") -> None:
    import resource

    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.retrieval.builder import build_index

    encoder = SFPEncoder.from_pretrained(runtime=runtime)
    t = time.perf_counter()
    report = build_index(docs, encoder, out, rebuild=True, show_progress=False)
    seconds = time.perf_counter() - t
    print(
        "RESULT "
        + json.dumps(
            {
                "seconds": seconds,
                "files": report.files,
                "chunks": report.chunks,
                "chunks_per_s": report.chunks / seconds,
                "centering_s": report.centering_s,
                "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                "runtime": encoder.runtime,
            }
        )
    )


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[0][7:])


def compare_runtimes(args, index_dir: Path, work: Path) -> dict:
    """Build the corpus once per runtime, then cold-query each index with its runtime (interleaved, so drift on a
    shared machine hits all alike), and compare the vectors the runtimes wrote for the same chunks."""
    runtimes = args.runtimes.split(",")
    n = export_corpus(args.dataset, work / "docs")
    result: dict = {"build": {}, "cold_query_s": {}}
    for runtime in runtimes:
        b = result["build"][runtime] = run_child(str(work / "docs"), f"{index_dir}-{runtime}", runtime)
        print(f"build [{runtime}]: {n} documents, {b['chunks']} chunks in {b['seconds'] / 60:.1f} min "
              f"({b['chunks_per_s']:.1f} chunks/s)", flush=True)  # fmt: skip
    print("builds:", json.dumps(result["build"]), flush=True)  # kept in the log should a later step fail
    queries = [json.loads(line)["text"] for line in (SHARED / "beir" / args.dataset / "queries.jsonl").open()]
    cold: dict[str, list[float]] = {r: [] for r in runtimes}
    cli = cli_command()
    for q in queries[: args.cold]:
        for runtime in runtimes:
            t = time.perf_counter()
            subprocess.run(
                [cli, "-q", "query", q, "--index", f"{index_dir}-{runtime}", "-k", "5", "--runtime", runtime],
                check=True,
                capture_output=True,
            )
            cold[runtime].append(time.perf_counter() - t)
    for runtime, times in cold.items():
        result["cold_query_s"][runtime] = {"median": statistics.median(times), "all": times}
        print(f"cold `sfp-rag query` [{runtime}]: median {statistics.median(times):.2f} s", flush=True)
    first, *others = runtimes
    result["ratios"] = {
        f"{r}/{first}": {
            "chunks_per_s": result["build"][r]["chunks_per_s"] / result["build"][first]["chunks_per_s"],
            "cold_query_s": result["cold_query_s"][r]["median"] / result["cold_query_s"][first]["median"],
        }
        for r in others
    }
    a = np.load(Path(f"{index_dir}-{first}") / "vectors.npy")
    for r in others:
        b = np.load(Path(f"{index_dir}-{r}") / "vectors.npy")
        if a.shape == b.shape:
            cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            result[f"vectors_{r}_vs_{first}"] = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    print("runtimes:", json.dumps({k: v for k, v in result.items() if k not in ("build", "cold_query_s")}), flush=True)
    return result


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--skip-build", action="store_true", help="reuse indexes/bench-<dataset>")
    parser.add_argument("--cold", type=int, default=5, help="cold `sfp-rag query` runs")
    parser.add_argument("--warm", type=int, default=200, help="warm queries")
    parser.add_argument("--memory-docs", type=int, default=0, help="N for the 1x / 4x memory check (0: skip)")
    parser.add_argument(
        "--out", default=None, help="result file [default: benchmarks/results/index_query_<dataset>.json]"
    )
    parser.add_argument(
        "--runtimes",
        default=None,
        help="comma-separated runtimes (torch,openvino) to build and cold-query in this one run, for ratios "
        "[default: only the default runtime]",
    )
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_build(*args.child)
        return

    out: dict = {"benchmark": "index_query", "dataset": args.dataset, "date": time.strftime("%Y-%m-%d %H:%M")}
    index_dir = ROOT / "indexes" / f"bench-{args.dataset}"
    work = Path(tempfile.mkdtemp(prefix="sfp-bench-"))
    try:
        if args.runtimes:
            out["runtimes"] = compare_runtimes(args, index_dir, work)
            index_dir = Path(f"{index_dir}-{args.runtimes.split(',')[-1]}")
        elif not args.skip_build:
            n = export_corpus(args.dataset, work / "docs")
            out["build"] = run_child(str(work / "docs"), str(index_dir))
            b = out["build"]
            print(
                f"build: {n} documents, {b['chunks']} chunks in {b['seconds'] / 60:.1f} min "
                f"({b['chunks_per_s']:.1f} chunks/s, of which centering {b['centering_s']:.1f} s), "
                f"peak RSS {b['peak_rss_gib']:.2f} GiB",
                flush=True,
            )

        queries = [json.loads(line)["text"] for line in (SHARED / "beir" / args.dataset / "queries.jsonl").open()]
        cold, cli = [], cli_command()
        for q in queries[: args.cold]:
            t = time.perf_counter()
            subprocess.run(
                [cli, "-q", "query", q, "--index", str(index_dir), "-k", "5"], check=True, capture_output=True
            )
            cold.append(time.perf_counter() - t)
        out["cold_query_s"] = {"median": statistics.median(cold), "p95": percentile(cold, 95), "all": cold}
        print(
            f"cold `sfp-rag query`: median {statistics.median(cold):.2f} s, p95 {percentile(cold, 95):.2f} s",
            flush=True,
        )

        from sfp_rag.retrieval.searcher import Searcher

        searcher = Searcher.open(index_dir)
        searcher.search(queries[0], k=10)
        warm = []
        for q in queries[: args.warm]:
            t = time.perf_counter()
            searcher.search(q, k=10)
            warm.append(time.perf_counter() - t)
        out["warm_query_ms"] = {"p50": 1000 * percentile(warm, 50), "p95": 1000 * percentile(warm, 95)}
        print(
            f"warm search(): p50 {out['warm_query_ms']['p50']:.1f} ms, p95 {out['warm_query_ms']['p95']:.1f} ms",
            flush=True,
        )

        from sfp_rag.retrieval.faiss_index import brute_force_search

        vectors = np.asarray(searcher.collection.vectors(), dtype=np.float32)
        qv = searcher.encoder.encode_queries(queries[:1000])
        timings = {}
        for name, fn in (
            ("faiss", lambda: searcher.collection.faiss.search(qv, 10)),
            ("numpy", lambda: brute_force_search(vectors, qv, 10)),
        ):
            fn()
            t = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - t
        single = {}
        for name, fn in (
            ("faiss", lambda: searcher.collection.faiss.search(qv[:1], 10)),
            ("numpy", lambda: brute_force_search(vectors, qv[:1], 10)),
        ):
            t = time.perf_counter()
            for _ in range(100):
                fn()
            single[name] = (time.perf_counter() - t) * 10  # ms per call
        out["search_only"] = {"vectors": len(vectors), "queries": len(qv), "batch_s": timings, "single_ms": single}
        print(
            f"search only ({len(vectors)} vectors): {len(qv)} queries faiss {timings['faiss'] * 1000:.1f} ms vs "
            f"numpy {timings['numpy'] * 1000:.1f} ms; one query faiss {single['faiss']:.2f} ms vs numpy "
            f"{single['numpy']:.2f} ms",
            flush=True,
        )

        # fusion cost: one query's hybrid search per fusion, embeddings given (what fusing adds to the BM25 and FAISS
        # searches; convex also reads the stored vectors of BM25-only candidates), interleaved so drift hits all alike
        from sfp_rag.retrieval.fusion import FUSIONS

        n = min(len(qv), args.warm)
        fusion_ms = {f: [] for f in FUSIONS}
        for i in range(n):
            for fusion in FUSIONS:
                t = time.perf_counter()
                searcher.search(queries[i], k=10, mode="hybrid", fusion=fusion, vectors=qv[i : i + 1])
                fusion_ms[fusion].append(1000 * (time.perf_counter() - t))
        out["hybrid_search_ms"] = {
            f: {"p50": percentile(ms, 50), "p95": percentile(ms, 95)} for f, ms in fusion_ms.items()
        }
        print(
            "hybrid search with the query embedded (p50 ms): "
            + ", ".join(f"{f} {percentile(ms, 50):.2f}" for f, ms in fusion_ms.items()),
            flush=True,
        )

        if args.memory_docs:
            memory = {}
            for label, copies in (("1x", 1), ("4x", 4)):
                docs = work / f"mem-{label}"
                count = export_corpus(args.dataset, docs, limit=args.memory_docs, copies=copies)
                r = run_child(str(docs), str(work / f"index-{label}"))
                memory[label] = {"documents": count, **r}
                print(
                    f"memory {label}: {count} documents, {r['chunks']} chunks, peak RSS {r['peak_rss_gib']:.2f} GiB",
                    flush=True,
                )
            out["memory"] = memory
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"index_query_{args.dataset}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **out, "machine": machine()}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
