"""The memory check before training: /proc parsing, the two-probe estimate, the advice, and the trainer's use of it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sfp_rag.training import memory
from sfp_rag.training.memory import StepMemory, measure_step, memory_advice, process_memory, reachable_memory

MIB = 1 << 20


def _fake_proc(root: Path, rss: int, hwm: int, available: int) -> Path:
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "self" / "status").write_text(f"Name:\tpython\nVmHWM:\t{hwm // 1024} kB\nVmRSS:\t{rss // 1024} kB\n")
    (root / "meminfo").write_text(f"MemTotal:\t99999999 kB\nMemAvailable:\t{available // 1024} kB\n")
    if not (root / "self" / "clear_refs").exists():
        (root / "self" / "clear_refs").write_text("")
    return root


def test_proc_fields_are_read_in_bytes(tmp_path):
    proc = _fake_proc(tmp_path / "proc", rss=300 * MIB, hwm=500 * MIB, available=2048 * MIB)
    assert process_memory(proc) == (300 * MIB, 500 * MIB)
    assert reachable_memory(300 * MIB, proc, tmp_path / "no-cgroup") == 2348 * MIB
    assert process_memory(tmp_path / "missing") is None
    assert reachable_memory(1, tmp_path / "missing") is None


def test_a_cgroup_limit_caps_what_is_reachable(tmp_path):
    proc = _fake_proc(tmp_path / "proc", rss=300 * MIB, hwm=300 * MIB, available=8192 * MIB)
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{1024 * MIB}\n")
    (cgroup / "memory.current").write_text(f"{600 * MIB}\n")
    assert reachable_memory(300 * MIB, proc, cgroup) == 724 * MIB  # 300 own + (1024 - 600) left in the group
    (cgroup / "memory.max").write_text("max\n")
    assert reachable_memory(300 * MIB, proc, cgroup) == 8492 * MIB


def test_two_probes_separate_the_fixed_part_from_the_part_per_row(tmp_path):
    rss, fixed, per_row = 1000 * MIB, 400 * MIB, 50 * MIB
    proc = _fake_proc(tmp_path / "proc", rss=rss, hwm=3000 * MIB, available=10_000 * MIB)
    sizes = []

    def probe(rows: int) -> None:  # the peak a forward and backward of `rows` rows would reach
        sizes.append(rows)
        _fake_proc(proc, rss=rss, hwm=rss + fixed + rows * per_row, available=10_000 * MIB)

    measured = measure_step(probe, rows=32, proc=proc, cgroup=tmp_path / "none")
    assert sizes == [2, 6]  # memory.PROBE_ROWS
    assert (proc / "self" / "clear_refs").read_text() == "5"  # the peak was reset before the probes
    assert measured.per_row == pytest.approx(per_row)
    assert measured.estimate == pytest.approx(rss + fixed + 32 * per_row, rel=1e-6)
    assert measured.reachable == rss + 10_000 * MIB
    # one probe alone would have charged the fixed part to every row: (400 + 2 * 50) / 2 = 250 MiB per row


def test_no_estimate_where_the_system_does_not_report_memory(tmp_path):
    assert measure_step(lambda rows: None, rows=32, proc=tmp_path / "missing") is None


def test_advice_only_near_the_limit_and_only_with_options_not_yet_taken():
    fits = StepMemory(rss=2 * 1024 * MIB, per_row=100 * MIB, rows=32, reachable=16 * 1024 * MIB)
    assert memory_advice(fits, gradient_checkpointing=False, grad_cache=0) is None
    tight = StepMemory(rss=2 * 1024 * MIB, per_row=250 * MIB, rows=32, reachable=10 * 1024 * MIB)
    advice = memory_advice(tight, gradient_checkpointing=False, grad_cache=0)
    assert "may run out of memory" in advice and "9.8 GiB per step, 10.0 GiB reachable" in advice
    assert "--gradient-checkpointing" in advice and "--grad-cache 8" in advice
    advice = memory_advice(tight, gradient_checkpointing=True, grad_cache=4)
    assert "--gradient-checkpointing" not in advice and "--grad-cache" not in advice and "--max-text-tokens" in advice


def _linux_peak_resettable() -> bool:
    return process_memory() is not None and memory.reset_peak()


@pytest.mark.skipif(not _linux_peak_resettable(), reason="needs /proc/self/status and a writable clear_refs (Linux)")
def test_training_logs_the_estimate_and_warns_when_it_will_not_fit(tiny_model_dir, tmp_path, monkeypatch, caplog):
    from sfp_rag.training.config import TrainConfig
    from sfp_rag.training.trainer import train

    data = tmp_path / "sentences.txt"
    data.write_text("\n".join(f"sentence {i} about the {w} of the day." for i, w in enumerate(["sun", "sea"] * 8)))
    config = dict(data=str(data), model=str(tiny_model_dir), quantization="none", batch_size=4, max_steps=1,
                  warmup_steps=0, device="cpu", dtype="float32")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="sfp_rag.training"):
        train(TrainConfig(output_dir=str(tmp_path / "a"), **config), show_progress=False)
    assert "memory: about" in caplog.text and "scaled to 4" in caplog.text
    assert "may run out of memory" not in caplog.text

    caplog.clear()
    monkeypatch.setattr(memory, "reachable_memory", lambda rss, *a: 1)  # a machine with no memory left
    with caplog.at_level(logging.INFO, logger="sfp_rag.training"):
        train(TrainConfig(output_dir=str(tmp_path / "b"), **config), show_progress=False)
    assert "training may run out of memory" in caplog.text and "--gradient-checkpointing" in caplog.text
