"""Load test of `sfp-rag serve`, on 127.0.0.1 only, bounded in requests and time.

1. Starts `sfp-rag serve` (a subprocess) over an index of examples/docs, waits for /health.
2. Cold `sfp-rag query --server URL` (a new process each time: imports, HTTP round trip, printing), median of 5.
3. /search at 1, 4 and 16 concurrent clients for --seconds each (at most --max-requests per level): p50, p95,
   queries/s, errors. Batching shows as throughput at 16 clients over throughput at 1.
4. /v1/embeddings: 1,000 short texts sent as 32-text requests by 4 clients, against `SFPEncoder.encode` of the same
   texts in this process (the HTTP overhead).

    python benchmarks/serve_load.py --seconds 60

Writes benchmarks/results/serve_load_cpu.json. The client threads share the machine with the server (2 cores here),
so the figures are a floor for a server with the machine to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import RESULTS, cli_command, machine

HERE = Path(__file__).resolve().parent
QUERIES = [
    "How do I reset my password?",
    "How much does the Plus plan cost?",
    "Who walked on the Moon first?",
    "How do bees tell each other where flowers are?",
    "How long should a marathon training plan be?",
    "What does a database index do?",
    "How do I pull a good espresso?",
    "When were Roman aqueducts built?",
]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300) -> float:
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError("the server did not become healthy")


def load(url: str, clients: int, seconds: float, max_requests: int) -> dict:
    import httpx

    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = 0
    budget = [max_requests]

    def worker(n: int) -> None:
        nonlocal errors
        with httpx.Client(timeout=30) as http:
            i = n
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                t = time.perf_counter()
                try:
                    r = http.post(f"{url}/search", json={"query": QUERIES[i % len(QUERIES)], "k": 5})
                    ok = r.status_code == 200 and r.json()["hits"]
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t)
                errors += not ok
                i += clients

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(wall, 2),
        "qps": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p95_ms": round(1000 * latencies[int(len(latencies) * 0.95)], 1),
    }


def cold_query(url: str, runs: int = 5) -> dict:
    times, cli = [], cli_command()  # looked up once, outside the timed region
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run(
            [cli, "-q", "query", "How do I reset my password?", "--server", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        times.append(time.perf_counter() - t)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
    return {"runs": runs, "median_s": round(statistics.median(times), 3), "times_s": [round(x, 3) for x in times]}


def embeddings(url: str, n: int = 1000, per_request: int = 32, clients: int = 4) -> dict:
    import httpx

    texts = [f"Short sentence number {i} about {QUERIES[i % len(QUERIES)].lower()}" for i in range(n)]
    chunks = [texts[i : i + per_request] for i in range(0, n, per_request)]

    def send(chunk):
        with httpx.Client(timeout=120) as http:
            r = http.post(f"{url}/v1/embeddings", json={"input": chunk})
            return r.status_code == 200 and len(r.json()["data"]) == len(chunk)

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        ok = list(pool.map(send, chunks))
    http_s = time.perf_counter() - t
    return {"texts": n, "per_request": per_request, "clients": clients, "http_s": round(http_s, 2),
            "http_texts_per_s": round(n / http_s, 1), "errors": ok.count(False), "texts_list": texts}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-requests", type=int, default=5000, help="per concurrency level")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--levels", default="1,4,16")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="sfp-serve-load-"))
    env = {**os.environ, "SFP_RAG_HOME": str(home)}
    subprocess.run([cli_command(), "-q", "index", str(HERE.parent / "examples" / "docs")], env=env, check=True)
    url = f"http://127.0.0.1:{args.port}"
    proc = subprocess.Popen([cli_command(), "-q", "serve", "--port", str(args.port)], env=env)
    try:
        start_s = wait_healthy(url, proc)
        print(f"server up in {start_s:.1f} s")
        cold = cold_query(url)
        print(f"cold `sfp-rag query --server`: median {cold['median_s']} s")
        levels = []
        for clients in (int(c) for c in args.levels.split(",")):
            row = load(url, clients, args.seconds, args.max_requests)
            levels.append(row)
            print(f"/search x{clients}: {row}")
        emb = embeddings(url)
        texts = emb.pop("texts_list")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    from sfp_rag import SFPEncoder

    encoder = SFPEncoder.from_pretrained()
    encoder.encode(texts[:32])  # warm-up, as the server does
    t = time.perf_counter()
    encoder.encode(texts, batch_size=32, show_progress_bar=False)
    emb["in_process_s"] = round(time.perf_counter() - t, 2)
    emb["in_process_texts_per_s"] = round(len(texts) / emb["in_process_s"], 1)
    emb["http_over_in_process"] = round(emb["http_s"] / emb["in_process_s"], 3)
    print(f"/v1/embeddings: {emb}")
    one = next(r for r in levels if r["clients"] == 1)
    result = {
        "kind": "serve-load",
        "server_start_s": round(start_s, 1),
        "cold_query": cold,
        "search": levels,
        "throughput_16_over_1": round(levels[-1]["qps"] / one["qps"], 2),
        "embeddings": emb,
        "machine": machine(),
    }
    out = RESULTS / "serve_load_cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
