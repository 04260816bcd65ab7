"""FAISS index types at scale: build time, index bytes, peak memory, recall@10 against exact search, query latency.

Vectors are real embeddings with noise: the cached document embeddings of a BEIR corpus (run `sfp-rag eval beir`
once first; otherwise clustered random vectors) resampled with Gaussian noise to N rows of the model's width, then
L2-normalised. Each index type is built in its own subprocess, so its peak RSS is its own. Recall@10 is measured on
1,000 held-out noisy queries against exact inner-product search (Flat).

    python benchmarks/faiss_scale.py --n 1000000                      # Flat, IVF-Flat, IVF-PQ, HNSW (HNSW on --hnsw-n)
    python benchmarks/faiss_scale.py --n 10000000 --types ondisk      # on-disk IVF-PQ: memory stays bounded

Writes benchmarks/results/faiss_scale_<n>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, PeakMemory, machine

# IVF1024: sqrt(n) lists for 1M vectors, the low end of FAISS's 4*sqrt(n)..16*sqrt(n), so that training fits a 2-core
# machine in minutes (k-means on 1024 x 256 sampled vectors); `--index-type auto` picks IVF4096 at this size.
TYPES = {
    "flat": "Flat",
    "ivf-flat": "IVF1024,Flat",
    "ivf-pq": "IVF1024,PQ80",
    "hnsw": "HNSW32",
    "ondisk": "IVF1024,PQ80",
}


def base_vectors(dim: int) -> np.ndarray:
    """Real embeddings when the evaluation cache has some, else clustered random vectors."""
    from sfp_rag._utils import cache_dir

    rows = []
    for shard in sorted((cache_dir() / "embeddings").glob("*/shard-*.npz")):
        with np.load(shard) as data:  # the evaluation cache: keys and vectors, no pickles
            if data["vectors"].ndim == 2 and data["vectors"].shape[1] == dim:
                rows.append(data["vectors"])
    if rows:
        return np.concatenate(rows).astype(np.float32)
    rng = np.random.default_rng(0)
    return rng.standard_normal((4096, dim)).astype(np.float32)


def make_vectors(path: Path, n: int, dim: int, seed: int = 0) -> Path:
    """N noisy copies of the base vectors in a .npy memory map (written in blocks: memory stays small)."""
    base = base_vectors(dim)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = base[rng.integers(0, len(base), m)] + 0.04 * rng.standard_normal((m, dim)).astype(np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    out.flush()
    return path


def child(args: argparse.Namespace) -> None:
    """Build one index type over the vectors and measure it (runs in its own process)."""
    import faiss

    from sfp_rag.retrieval.faiss_index import FaissIndex, build_ondisk

    vectors = np.load(args.vectors, mmap_mode="r")
    n = args.limit or vectors.shape[0]
    vectors = vectors[:n]
    queries = np.load(args.queries)
    factory = TYPES[args.kind]
    folder = Path(tempfile.mkdtemp(dir=Path(args.vectors).parent))
    t = time.perf_counter()
    with PeakMemory() as memory:  # the build's own memory, apart from the pages of the vectors' memory map
        if args.kind == "ondisk":
            index = build_ondisk(vectors, factory, folder, shard_rows=250_000, workers=2)
        else:
            index = FaissIndex.build(vectors, factory, use_gpu=False)
            index.save(folder / "index.faiss")
    build = time.perf_counter() - t
    size = sum(p.stat().st_size for p in folder.iterdir())
    t = time.perf_counter()
    _, ids = index.search(queries, 10)
    batch = time.perf_counter() - t
    single = []
    for q in queries[:200]:
        t = time.perf_counter()
        index.search(q[None], 10)
        single.append(time.perf_counter() - t)
    np.save(folder / "ids.npy", ids)
    print(json.dumps({
        "type": args.kind, "factory": factory, "n": int(n), "build_s": round(build, 1), "index_bytes": size,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2), **memory.as_dict(),
        "search_1000_batched_s": round(batch, 3), "query_ms_p50": round(1000 * float(np.median(single)), 3),
        "ids": str(folder / "ids.npy"), "faiss_threads": faiss.omp_get_max_threads(),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--types", default="flat,ivf-flat,ivf-pq,hnsw")
    parser.add_argument("--hnsw-n", type=int, default=200_000, help="HNSW is built on the first N (slow on 2 cores)")
    parser.add_argument("--work", default=None, help="scratch folder [default: a temporary one]")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--vectors", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--queries", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="sfp-faiss-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    vectors = make_vectors(work / "vectors.npy", args.n, args.dim)
    rng = np.random.default_rng(1)
    data = np.load(vectors, mmap_mode="r")
    queries = np.array(data[rng.integers(0, args.n, 1000)]) + 0.04 * rng.standard_normal((1000, args.dim))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    np.save(work / "queries.npy", queries)
    print(f"{args.n} vectors of width {args.dim} in {time.perf_counter() - t:.0f} s ({work})")

    def exact(limit: int) -> np.ndarray:
        from sfp_rag.retrieval.faiss_index import brute_force_search

        best = None
        for start in range(0, limit, 200_000):  # blockwise: memory stays small
            block = np.asarray(data[start : min(start + 200_000, limit)])
            s, i = brute_force_search(block, queries, 10)
            i = i + start
            if best is None:
                best = (s, i)
            else:
                s2, i2 = np.concatenate([best[0], s], 1), np.concatenate([best[1], i], 1)
                order = np.argsort(-s2, axis=1)[:, :10]
                best = (np.take_along_axis(s2, order, 1), np.take_along_axis(i2, order, 1))
        return best[1]

    rows = []
    truth: dict[int, np.ndarray] = {}
    for kind in args.types.split(","):
        limit = min(args.hnsw_n, args.n) if kind == "hnsw" else args.n
        cmd = [sys.executable, __file__, "--child", "1", "--vectors", str(vectors), "--queries",
               str(work / "queries.npy"), "--kind", kind, "--limit", str(limit)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{kind}: failed\n{done.stderr[-2000:]}")
            rows.append({"type": kind, "error": done.stderr[-500:]})
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        if limit not in truth:
            truth[limit] = exact(limit)
        ids = np.load(row.pop("ids"))
        row["recall_at_10"] = round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth[limit])])), 4)
        rows.append(row)
        print(row)
    result = {"kind": "faiss-scale", "n": args.n, "dim": args.dim, "rows": rows, "machine": machine()}
    out = RESULTS / f"faiss_scale_{args.n}{'_' + args.types.replace(',', '-') if args.types == 'ondisk' else ''}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
