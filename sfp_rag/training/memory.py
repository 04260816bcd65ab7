"""Say before a CPU training run outgrows the machine's memory, not after the kernel has killed it.

A training step's peak memory is the model plus the activations kept for the backward pass, and those grow with the
rows embedded at once and their length: the ``--corpus`` recipe (batch 32, 64-token texts) peaks at about 9-10 GiB on
Gemma-3-270M, which a 16 GB laptop with a browser open may not have. A process killed for memory says nothing, so
before the first step the trainer runs a forward and backward of 2, then 6, of the run's longest texts, reads the
peak resident memory after each (``/proc/self/status``, the peak reset first through ``/proc/self/clear_refs``),
takes the growth per row between the two, scales it to the rows of a real step, and compares that with the memory
this process can reach (its own resident memory plus what ``/proc/meminfo`` reports available, capped by a cgroup v2
limit). Where the estimate comes near it, a warning names the options that trade time for memory.

It is an estimate: memory freed earlier and still held by the process is reused without raising the resident size,
and later batches may be longer than the probe's texts (the training guide gives its measured accuracy). Linux
only; elsewhere, and on a GPU (where CUDA fails with a clear out-of-memory error of its own), nothing is measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

GIB = 1 << 30
WARN_SHARE = 0.85  # warn from this share of the reachable memory: the estimate fell up to 10% short of a full run
PROC = Path("/proc")
CGROUP = Path("/sys/fs/cgroup")
PROBE_ROWS = (2, 6)  # the two probes' sizes: their difference separates the growth per row from the fixed part


def proc_fields(path: Path, names: tuple[str, ...]) -> dict[str, int]:
    """The ``name: N kB`` lines of a /proc file (``status``, ``meminfo``) among ``names``, in bytes."""
    out = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in names:
            out[key] = int(rest.split()[0]) * 1024
    return out


def process_memory(proc: Path = PROC) -> tuple[int, int] | None:
    """(resident bytes now, peak resident bytes) of this process, or None where /proc does not say."""
    try:
        fields = proc_fields(proc / "self" / "status", ("VmRSS", "VmHWM"))
        return fields["VmRSS"], fields["VmHWM"]
    except (OSError, KeyError, ValueError, IndexError):
        return None


def reset_peak(proc: Path = PROC) -> bool:
    """Reset this process's peak resident size (VmHWM) to its resident size now; False where it cannot."""
    try:
        (proc / "self" / "clear_refs").write_text("5")
        return True
    except OSError:
        return False


def reachable_memory(rss: int, proc: Path = PROC, cgroup: Path = CGROUP) -> int | None:
    """Bytes this process could be resident in: ``rss`` plus the machine's available memory, capped by the cgroup
    v2 limit of the process's group where there is one (a container); None where /proc does not say."""
    try:
        reachable = rss + proc_fields(proc / "meminfo", ("MemAvailable",))["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        return None
    try:
        limit, current = (cgroup / "memory.max").read_text().strip(), (cgroup / "memory.current").read_text().strip()
        if limit != "max":
            reachable = min(reachable, rss + int(limit) - int(current))
    except (OSError, ValueError):
        pass
    return reachable


@dataclass(frozen=True)
class StepMemory:
    """A step's memory, estimated from measured probes: ``rss``, resident bytes before the step with its fixed part
    added, ``per_row`` bytes of peak per row embedded at once, ``rows`` embedded at once in a real step,
    ``reachable`` bytes for this process."""

    rss: int
    per_row: float
    rows: int
    reachable: int

    @property
    def estimate(self) -> int:
        return int(self.rss + self.per_row * self.rows)

    def describe(self) -> str:
        return f"about {self.estimate / GIB:.1f} GiB per step, {self.reachable / GIB:.1f} GiB reachable"


def measure_step(
    probe: Callable[[int], None], rows: int, proc: Path = PROC, cgroup: Path = CGROUP
) -> StepMemory | None:
    """Estimate a step that embeds ``rows`` rows at once from two probes, ``probe(n)`` for each ``n`` of
    ``PROBE_ROWS`` (a forward and backward of that many rows): the peak grows by ``per_row`` per row above a fixed
    part (bf16 copies of the weights under autocast, gradient buffers) that one probe alone would count per row. The
    peak is not reset between the probes, so memory the first freed and kept does not hide the second's. None where
    this system does not report memory."""
    small, large = PROBE_ROWS
    before = process_memory(proc)
    if before is None or not reset_peak(proc):
        return None
    rss = before[0]  # resetting the peak leaves the resident size as it was
    probe(small)
    first = process_memory(proc)
    probe(large)
    second = process_memory(proc)
    if first is None or second is None:
        return None
    reachable = reachable_memory(second[0], proc, cgroup)  # what the probes freed and kept is the process's to reuse
    if reachable is None:
        return None
    per_row = max(0, second[1] - first[1]) / (large - small)
    fixed = max(0.0, first[1] - rss - small * per_row)
    return StepMemory(rss=rss + int(fixed), per_row=per_row, rows=rows, reachable=reachable)


def memory_advice(memory: StepMemory, gradient_checkpointing: bool, grad_cache: int) -> str | None:
    """The warning for an estimate near the reachable memory (``WARN_SHARE``), with what to change; None if it fits."""
    if memory.estimate < WARN_SHARE * memory.reachable:
        return None
    options = []
    if not gradient_checkpointing:
        options.append("--gradient-checkpointing (the --corpus recipe: 0.30x the memory at 1.46x the time)")
    if memory.rows > 8 and (not grad_cache or grad_cache > 8):
        options.append("--grad-cache 8 (the same batch, 8 rows embedded at a time)")
    options.append("a lower --max-text-tokens")
    return (
        f"training may run out of memory: a measured probe step scales to {memory.describe()} for this process "
        f"({memory.rows} rows embedded at once); the estimate can fall short of the real peak. If the run is "
        f"killed, run it again with one of: {'; '.join(options)}"
    )
