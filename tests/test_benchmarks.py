"""Benchmark scripts that must behave on any machine (they are never timed here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_gpu_check_says_so_and_exits_0_without_a_gpu():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py")], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU here" in done.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")))
def test_every_benchmark_explains_itself(script):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()


def _load(name: str):
    import importlib.util

    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_train_cost_memory_ratios_use_the_cuda_allocator_and_never_divide_by_zero():
    """On CUDA the RSS does not move, so the memory above the loaded model comes from the allocator; a ratio whose
    denominator is not positive is None (it crashed the first GPU run at the 7B shape)."""
    train_cost = _load("train_cost")
    flat_rss = {"step_s": 2.0, "tokens_per_step": 100, "rss_after_load_gib": 3.0, "peak_rss_gib": 3.0}
    single = {**flat_rss, "step_s": 1.0, "cuda_after_load_gib": 4.0, "peak_cuda_gib": 10.0}
    double = {**flat_rss, "cuda_after_load_gib": 4.0, "peak_cuda_gib": 16.0}
    ratios = train_cost._ratios(single, double)
    assert ratios == {"step_time": 0.5, "peak_memory": 10 / 16, "tokens": 1.0, "training_memory": 0.5}
    assert train_cost._ratios(flat_rss, flat_rss)["training_memory"] is None  # RSS did not move: no ratio


def test_train_cost_runs_end_to_end_on_a_tiny_model(tmp_path, tiny_model_dir):
    data = tmp_path / "s.txt"
    data.write_text("\n".join(f"Sentence number {i} is about cats and dogs." for i in range(64)))
    out = tmp_path / "cost.json"
    cmd = [sys.executable, str(BENCHMARKS / "train_cost.py"), "--model", str(tiny_model_dir), "--data", str(data),
           "--batch-size", "8", "--steps", "1", "--warmup", "0", "--objectives", "single-pass,two-pass-dropout",
           "--gradient-checkpointing", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    record = json.loads(out.read_text())
    assert set(record["results"]) == {
        "single-pass", "two-pass-dropout", "single-pass+checkpointing", "two-pass-dropout+checkpointing"
    }  # fmt: skip
    assert "two-pass-dropout" in record["ratios"] and "single-pass+checkpointing" in record["ratios"]
    assert record["results"]["single-pass+checkpointing"]["gradient_checkpointing"] is True


def test_result_file_names_are_safe_for_model_paths():
    common = _load("_common")
    assert common.safe_name("./runs/v1/") == "runs-v1" and common.safe_name("org/name") == "org-name"
    assert common.safe_name("gemma3-270m") == "gemma3-270m" and common.safe_name("/") == "model"


@pytest.mark.slow
def test_gpu_check_runs_every_part_on_the_cpu_with_tiny_shapes(tmp_path):
    """The GPU check's own dry run (about 3 minutes here, so marked slow): random-weight backbones of tiny shapes,
    every part through to one JSON, as it will run on a bare GPU box."""
    import json

    out = tmp_path / "dry.json"
    cmd = [
        sys.executable,
        str(BENCHMARKS / "gpu_check.py"),
        "--dry",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["backbones"]["gemma3-270m"]["weights"].startswith("RANDOM")
    assert result["encode"]["batch_invariance_float32_min_cosine"] > 0.9999
    assert "ratios" in result["train"] and "ratios" in result["train7b"] and "results" in result["train7b_batch256"]
