"""How close the trainer's memory estimate (``training.memory``, logged before the first step) comes to the peak
the run then reaches.

Each variant is a fresh ``sfp-rag train`` process of a few steps; its peak resident memory comes from the kernel
(``wait4``'s ``ru_maxrss``), the estimate from its ``memory: about X GiB per step`` log line. Loading the model peaks
lower than a training step here, so the process's peak is the steps' peak. A short run can peak below a long one
(a later batch may be longer): the docs set these beside the peaks of full runs.

    python benchmarks/train_memory_estimate.py --corpus ../shared/data/beir/nfcorpus

Writes benchmarks/results/train_memory_estimate_<cpu>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from _common import RESULTS, cli_command, machine, safe_name

VARIANTS = {
    "recipe": [],
    "gradient-checkpointing": ["--gradient-checkpointing"],
    "max-text-tokens-128": ["--max-text-tokens", "128"],
}
ESTIMATE = re.compile(r"memory: about ([0-9.]+) GiB per step, ([0-9.]+) GiB reachable")


def run(corpus: str, steps: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [cli_command(), "train", "--corpus", corpus, "--steps", str(steps), "--warmup-steps", "1",
               "--log-every", "1", "-o", str(Path(tmp) / "run"), *extra]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-2000:]}")
    found = ESTIMATE.search(out)
    if not found:
        raise RuntimeError(f"no memory estimate in the log of {' '.join(cmd)}:\n{out[-2000:]}")
    peak = usage.ru_maxrss / (1 << 20)  # KiB -> GiB
    estimate = float(found.group(1))
    return {
        "command": " ".join(["sfp-rag", *cmd[1:]]).replace(str(Path(tmp) / "run"), "RUN"),
        "estimate_gib": estimate,
        "reachable_gib": float(found.group(2)),
        "peak_gib": round(peak, 2),
        "estimate_over_peak": round(estimate / peak, 3),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a BEIR or docs folder (train --corpus)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    rows = {}
    for name in args.variants.split(","):
        rows[name] = run(args.corpus, args.steps, VARIANTS[name])
        print(name, json.dumps(rows[name]), flush=True)
    info = machine()
    result = {"kind": "train_memory_estimate", "corpus": args.corpus, "steps": args.steps, "rows": rows,
              "machine": info}  # fmt: skip
    out = (
        Path(args.out)
        if args.out
        else RESULTS / f"train_memory_estimate_{safe_name(info.get('cpu', 'cpu')).lower()}.json"
    )
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("->", out)


if __name__ == "__main__":
    main()
