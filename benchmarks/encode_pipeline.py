"""How fast is the host side of encoding, alone? The texts/s that ``SFPEncoder.encode`` sustains when the model is
replaced by a no-op that returns hidden states of the real shape: prompt rendering, tokenization with the Rep1/Rep2
lookups, length-sorted batching, collation and reading the vectors back. On a GPU this is the work that must keep
up with the device; here it is measured on one CPU core (torch and the Rust tokenizer both limited to one thread).

    python benchmarks/encode_pipeline.py                             # this tree, 20,000 Wikipedia sentences
    python benchmarks/encode_pipeline.py --compare-with 10a80f4      # and a git revision, in the same run

Each tree runs in its own process, three times, alternating; the median is reported. Also reported, for this tree:
the seconds of each stage (tokenize, collate, the no-op forward and read-back) and the Rust tokenizer's own rate on
the rendered prompts, the floor of any pipeline that tokenizes exactly. Writes
benchmarks/results/encode_pipeline_<model>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, machine, safe_name

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "unsup_sentences.txt.gz"


def measure(model: str, n: int, batch_size: int, data: Path) -> dict:
    """In this process: texts/s of encode() over a no-op backbone, and the time of each stage."""
    import torch
    from torch import nn

    from sfp_rag.embedding.backbones import load_tokenizer, resolve_model_dir
    from sfp_rag.embedding.config import EncoderConfig
    from sfp_rag.embedding.encoder import SFPEncoder, plan_batches

    torch.set_num_threads(1)
    with gzip.open(data, "rt", encoding="utf-8") as f:
        texts = [next(f).strip() for _ in range(n)]
    model_dir = resolve_model_dir(model)
    tokenizer = load_tokenizer(model_dir)
    hidden_size = json.loads((Path(model_dir) / "config.json").read_text()).get("hidden_size", 640)

    class NoOp(nn.Module):
        """Returns hidden states of the real shape (not filled: the cost of the model is what is left out)."""

        def __init__(self) -> None:
            super().__init__()
            self.config = type("Config", (), {"hidden_size": hidden_size})()
            self.anchor = nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, **_):
            return type("Out", (), {"last_hidden_state": torch.empty(*input_ids.shape, hidden_size)})()

    config = EncoderConfig(model=str(model_dir), template="eol-sum", device="cpu", dtype="float32")
    encoder = SFPEncoder(NoOp(), tokenizer, config, device="cpu")
    encoder.encode(texts[:512], batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size, show_progress_bar=False)
    total = time.perf_counter() - started
    prompter = encoder.prompt_tokenizer
    t = time.perf_counter()
    prompts = prompter.tokenize(texts)
    tokenize = time.perf_counter() - t
    batches = plan_batches([len(p.input_ids) for p in prompts], batch_size)
    t = time.perf_counter()
    collated = [prompter.collate([prompts[i] for i in rows]) for rows in batches]
    collate = time.perf_counter() - t
    rendered = [prompter.template.render(x).prompt for x in texts]
    t = time.perf_counter()
    tokenizer.backend_tokenizer.encode_batch(rendered, add_special_tokens=True)
    rust = time.perf_counter() - t
    return {
        "texts": n,
        "batch_size": batch_size,
        "texts_per_s": n / total,
        "stages_s": {
            "encode_total": total,
            "tokenize": tokenize,
            "collate": collate,
            "rust_encode_batch": rust,
            "rest": total - tokenize - collate,
        },  # fmt: skip
        "rust_tokenizer_texts_per_s": n / rust,
        "batches": len(collated),
    }


def run_tree(tree: Path | None, args: argparse.Namespace) -> dict:
    """``measure`` in a child process, importing sfp_rag from ``tree`` (None: this checkout)."""
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--texts", str(args.texts),
           "--batch-size", str(args.batch_size), "--data", str(args.data)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode or not line:
        sys.exit(f"the measurement failed in {tree or 'this tree'}:\n{done.stderr[-3000:]}")
    return json.loads(line[0][7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m", help="whose tokenizer and width [default: gemma3-270m]")
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--compare-with", default=None, help="a git revision measured in the same run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.model, args.texts, args.batch_size, args.data)))
        return
    trees: dict[str, Path | None] = {"this tree": None}
    worktree = None
    if args.compare_with:
        worktree = Path(tempfile.mkdtemp(prefix="sfp-rev-")) / "tree"
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "-q", "--detach", str(worktree),
                        args.compare_with], check=True)  # fmt: skip
        trees[args.compare_with] = worktree
    try:
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(args.runs):  # alternating, so that a noisy spell of the machine hits both
            for name, tree in trees.items():
                runs[name].append(run_tree(tree, args))
                print(f"{name}: {runs[name][-1]['texts_per_s']:,.0f} texts/s", flush=True)
    finally:
        if worktree is not None:
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(worktree)])
    summary = {name: statistics.median(r["texts_per_s"] for r in rs) for name, rs in runs.items()}
    result = {
        "kind": "encode-pipeline",
        "model": args.model,
        "texts": args.texts,
        "batch_size": args.batch_size,
        "threads": 1,
        "command": "python benchmarks/encode_pipeline.py"
        + (f" --compare-with {args.compare_with}" if args.compare_with else ""),  # fmt: skip
        "median_texts_per_s": summary,
        "runs": runs,
        "machine": machine(),
    }
    if args.compare_with:
        result["speedup"] = summary["this tree"] / summary[args.compare_with]
    print(json.dumps({"median_texts_per_s": summary, "speedup": result.get("speedup")}, indent=2))
    out = Path(args.out or RESULTS / f"encode_pipeline_{safe_name(args.model)}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
