"""Training cost of the single-pass objective against the two-pass ones, at equal model, batch and data.

Each variant runs in its own subprocess, so peak memory is that variant's alone: on a CPU the peak RSS, and the
memory above the loaded model as peak RSS minus the RSS after loading; on CUDA both from the CUDA allocator (peak
allocated, and peak minus allocated after loading), since the process's RSS does not see GPU memory. Step time is
the median over the measured steps (forward, backward and optimizer step), after warm-up steps. Ratios are
single-pass / two-pass from the same run (a ratio whose denominator is not positive is reported as null).

    python benchmarks/train_cost.py                          # default model, CPU, batch 32
    python benchmarks/train_cost.py --dtype bfloat16 --quantization none
    python benchmarks/train_cost.py --model smollm2-135m --device cuda --batch-size 64
    python benchmarks/train_cost.py --objectives single-pass --grad-cache 8   # GradCache against the plain step
    python benchmarks/train_cost.py --objectives single-pass --gradient-checkpointing   # checkpointing against none

Writes benchmarks/results/train_cost_<device>_<model>_<quantization>_<dtype>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import machine, safe_name  # benchmarks/ is the script's folder

OBJECTIVES = ("single-pass", "two-pass-dropout", "two-pass-prompts")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "unsup_sentences.txt.gz"


def run_variant(args: argparse.Namespace, objective: str, grad_cache: int = 0, checkpointing: bool = False) -> dict:
    """Measure one objective, optionally with GradCache sub-batches of ``grad_cache`` rows and gradient
    checkpointing (runs inside the child process)."""
    import resource
    import statistics

    import torch

    from sfp_rag._utils import resolve_device, seed_everything
    from sfp_rag.embedding.modeling import SFPModel
    from sfp_rag.training.config import TrainConfig
    from sfp_rag.training.data import load_texts
    from sfp_rag.training.trainer import ObjectiveStep, load_model, resolve_train_autocast

    seed_everything(0)
    device = resolve_device(args.device)
    config = TrainConfig(
        data=str(args.data),
        output_dir="/tmp/unused",
        model=args.model,
        objective=objective,
        batch_size=args.batch_size,
        quantization=args.quantization,
        dtype=args.dtype,
        device=device,
        grad_cache=grad_cache,
        gradient_checkpointing=checkpointing,
    )
    texts = load_texts(args.data)[: args.batch_size * (args.steps + args.warmup)]
    model, tokenizer, quantization = load_model(config, device)
    sfp = SFPModel(model).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    autocast = resolve_train_autocast(args.dtype, device)
    step = ObjectiveStep(config, tokenizer, device, distributed=False, autocast=autocast)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is KiB on Linux)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        cuda_loaded = torch.cuda.memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    times, tokens = [], []
    for i in range(args.warmup + args.steps):
        batch = texts[i * args.batch_size : (i + 1) * args.batch_size]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss, n_tokens = step.backward(sfp, batch)  # as the trainer does: forward(s) and backward
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
            tokens.append(n_tokens)
    out = {
        "objective": objective,
        "grad_cache": grad_cache,
        "gradient_checkpointing": checkpointing,
        "quantization": quantization,
        "step_s": statistics.median(times),
        "step_s_all": times,
        "tokens_per_step": statistics.mean(tokens),
        "rss_after_load_gib": rss_loaded,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if cuda:
        out["cuda_after_load_gib"] = cuda_loaded
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _memory(r: dict) -> tuple[float, float]:
    """Peak memory and memory above the loaded model: from the CUDA allocator where measured, else from RSS."""
    if "peak_cuda_gib" in r:
        return r["peak_cuda_gib"], r["peak_cuda_gib"] - r["cuda_after_load_gib"]
    return r["peak_rss_gib"], r["peak_rss_gib"] - r["rss_after_load_gib"]


def _ratios(a: dict, b: dict) -> dict[str, float | None]:
    """Variant ``a`` over variant ``b``: step time, peak memory, tokens per step, and the memory above the loaded
    model (None where ``b``'s is not positive)."""
    (a_peak, a_training), (b_peak, b_training) = _memory(a), _memory(b)
    return {
        "step_time": _ratio(a["step_s"], b["step_s"]),
        "peak_memory": _ratio(a_peak, b_peak),
        "tokens": _ratio(a["tokens_per_step"], b["tokens_per_step"]),
        "training_memory": _ratio(a_training, b_training),
    }


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="measured steps per objective")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quantization", default="none", choices=["none", "nf4"])
    parser.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--grad-cache", type=int, default=0, help="also run each objective with GradCache of N rows")
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="also run each variant with gradient checkpointing (ratios against the same variant without)",
    )
    parser.add_argument("--skip-plain", action="store_true", help="run only the GradCache/checkpointing variants")
    parser.add_argument("--out", default=None, help="result file [default: benchmarks/results/train_cost_...json]")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-grad-cache", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-checkpointing", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_variant(args, args.child, args.child_grad_cache, bool(args.child_checkpointing))
        print("RESULT " + json.dumps(result))
        return
    results = {}
    variants = [(o, 0, False) for o in args.objectives.split(",")]
    if args.grad_cache:
        variants += [(o, args.grad_cache, False) for o in args.objectives.split(",")]
    if args.gradient_checkpointing:
        variants += [(o, c, True) for o, c, _ in variants]
    if args.skip_plain:  # a batch that only fits with GradCache or checkpointing (the 7B shape at batch 256)
        variants = [v for v in variants if v[1] or v[2]]
    for objective, cache, checkpointing in variants:
        name = objective + (f"+gradcache{cache}" if cache else "") + ("+checkpointing" if checkpointing else "")
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", objective, "--child-grad-cache", str(cache),
               "--child-checkpointing", str(int(checkpointing))]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(line[0][7:])
        r = results[name]
        print(
            f"{name:30s} step {r['step_s']:.2f} s  tokens/step {r['tokens_per_step']:.0f}  "
            f"peak RSS {r['peak_rss_gib']:.2f} GiB"
            + (f"  peak CUDA {r['peak_cuda_gib']:.2f} GiB" if "peak_cuda_gib" in r else ""),
            flush=True,
        )
    single = results.get("single-pass")
    ratios = {}
    for name, r in results.items():
        if single and name != "single-pass" and not r["grad_cache"] and not r.get("gradient_checkpointing"):
            ratios[name] = _ratios(single, r)
            print(
                f"single-pass / {name}: time {_show(ratios[name]['step_time'])}, peak memory "
                f"{_show(ratios[name]['peak_memory'])}, memory above the loaded model "
                f"{_show(ratios[name]['training_memory'])}, tokens {_show(ratios[name]['tokens'])}"
            )
    for name, r in results.items():
        plain = results.get(r["objective"])
        if (r["grad_cache"] or r.get("gradient_checkpointing")) and plain:
            ratios[name] = {f"{k}_vs_plain": v for k, v in _ratios(r, plain).items() if k != "tokens"}
            print(
                f"{name} / {r['objective']}: time {_show(ratios[name]['step_time_vs_plain'])}, peak memory "
                f"{_show(ratios[name]['peak_memory_vs_plain'])}, memory above the loaded model "
                f"{_show(ratios[name]['training_memory_vs_plain'])}"
            )
    record = {
        "benchmark": "train_cost",
        "args": {k: str(v) for k, v in vars(args).items() if k != "child"},
        "machine": machine(),
        "results": results,
        "ratios": ratios,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    out = (
        Path(__file__).parent
        / "results"
        / (
            f"train_cost_{args.device}_{safe_name(args.model)}_{args.quantization}_{args.dtype}_b{args.batch_size}"
            + (f"_gc{args.grad_cache}" if args.grad_cache else "")
            + ("_ckpt" if args.gradient_checkpointing else "")
            + ".json"
        )
    )
    out = Path(args.out) if args.out else out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
