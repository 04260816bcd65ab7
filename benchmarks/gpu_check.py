"""The GPU claims of this project, checked in one command on a machine with CUDA.

    python benchmarks/gpu_check.py                 # everything
    python benchmarks/gpu_check.py --skip train    # parts: encode, train, faiss

1. Encoding throughput of the default embedder in bf16 (tokens/s), and the FLOP rate it reaches as a fraction of the
   GPU's dense bf16 peak (2 x parameters x tokens; attention adds a few percent at these lengths and is left out).
2. A QLoRA training step (NF4 weights, bf16 compute), single-pass against the two-pass objectives: step time and peak
   GPU memory, as ratios from one run (`benchmarks/train_cost.py` on the GPU, each objective in its own process).
3. FAISS on 1M vectors of the model's width: build and search time of Flat and IVF on the GPU against the CPU, with
   recall@10 of IVF against exact search (needs a FAISS GPU build; the README says how to install one).

Where no CUDA GPU is present it says so and exits 0. Writes benchmarks/results/gpu_check_<gpu>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, machine

# Dense bf16 tensor-core peaks from the vendors' data sheets (no sparsity), TFLOP/s.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0}  # fmt: skip
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def peak_tflops(name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def check_encode(torch, n: int, batch_size: int) -> dict:
    import gzip

    from sfp_rag import SFPEncoder

    path = SHARED / "unsup_sentences.txt.gz"
    if path.exists():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts = [next(f).strip() for _ in range(n)]
    else:
        texts = [f"Sentence {i} about a topic of some length, for throughput." for i in range(n)]
    encoder = SFPEncoder.from_pretrained(device="cuda", dtype="bfloat16")
    params = sum(p.numel() for p in encoder.model.parameters())
    tokens = sum(len(p.input_ids) for p in encoder.prompt_tokenizer.tokenize(texts))
    encoder.encode(texts[: batch_size * 2], batch_size=batch_size)  # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        encoder.encode(texts, batch_size=batch_size, show_progress_bar=False)
        torch.cuda.synchronize()
        runs.append(time.perf_counter() - t)
    seconds = sorted(runs)[1]
    achieved = 2 * params * tokens / seconds / 1e12
    peak = peak_tflops(torch.cuda.get_device_name())
    return {
        "texts": n,
        "batch_size": batch_size,
        "tokens": tokens,
        "parameters": params,
        "seconds_median_of_3": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "texts_per_s": round(n / seconds, 1),
        "achieved_tflops": round(achieved, 2),
        "peak_bf16_tflops": peak,
        "fraction_of_peak": round(achieved / peak, 4) if peak else None,
    }


def check_train(batch_size: int) -> dict:
    here = Path(__file__).resolve().parent
    cmd = [sys.executable, str(here / "train_cost.py"), "--device", "cuda", "--quantization", "nf4",
           "--dtype", "bfloat16", "--batch-size", str(batch_size)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    written = re.findall(r"wrote (\S+\.json)", done.stdout)
    return json.loads(Path(written[-1]).read_text()) if written else {"output": done.stdout[-2000:]}


def check_faiss(dim: int, n: int, queries: int) -> dict:
    import faiss
    import numpy as np

    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        return {"skipped": "this FAISS build has no GPU support (faiss-cpu); see the README's GPU install command"}
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((1000, dim)).astype(np.float32)
    data = centers[rng.integers(0, 1000, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    faiss.normalize_L2(data)
    q = data[rng.integers(0, n, queries)] + 0.05 * rng.standard_normal((queries, dim)).astype(np.float32)
    faiss.normalize_L2(q)
    res = faiss.StandardGpuResources()
    out = {}
    truth = None
    for factory in ("Flat", "IVF4096,Flat"):
        for where in ("cpu", "gpu"):
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            if where == "gpu":
                index = faiss.index_cpu_to_gpu(res, 0, index)
            t = time.perf_counter()
            if not index.is_trained:
                index.train(data[:200_000])
            index.add(data)
            build = time.perf_counter() - t
            if factory.startswith("IVF"):
                faiss.ParameterSpace().set_index_parameter(index, "nprobe", 64)
            t = time.perf_counter()
            _, ids = index.search(q, 10)
            search = time.perf_counter() - t
            if factory == "Flat" and where == "cpu":
                truth = ids
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
            out[f"{factory} {where}"] = {"build_s": round(build, 3), "search_s": round(search, 4),
                                         "queries": queries, "recall_at_10": round(recall, 4)}  # fmt: skip
    for factory in ("Flat", "IVF4096,Flat"):
        cpu, gpu = out[f"{factory} cpu"], out[f"{factory} gpu"]
        out[f"{factory} speedup"] = {"build": round(cpu["build_s"] / gpu["build_s"], 1),
                                     "search": round(cpu["search_s"] / gpu["search_s"], 1)}  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: encode, train, faiss")
    parser.add_argument("--texts", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-batch-size", type=int, default=64)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to check (run this on a machine with one; see the README)")
        return 0
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    gpu = torch.cuda.get_device_name()
    result: dict = {"kind": "gpu-check", "gpu": gpu, "machine": machine()}
    if "encode" not in skip:
        result["encode"] = check_encode(torch, args.texts, args.batch_size)
        print("encode:", result["encode"])
        torch.cuda.empty_cache()
    if "train" not in skip:
        result["train"] = check_train(args.train_batch_size)
        print("train:", {k: v for k, v in result["train"].items() if "ratio" in k or k == "error"})
    if "faiss" not in skip:
        result["faiss"] = check_faiss(640, args.vectors, 10_000)
        print("faiss:", result["faiss"])
    out = RESULTS / f"gpu_check_{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
