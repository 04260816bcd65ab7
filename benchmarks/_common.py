"""What every benchmark records with its numbers: the machine it ran on (CPU model and flags vary between machines
of the same kind; AMX makes bf16 ~3x faster), and where results go."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cli_command() -> str:
    """The ``sfp-rag`` command of the Python running the benchmark (its venv's, also where the venv is not
    activated and ``sfp-rag`` is not on PATH); else whatever PATH has."""
    import shutil
    import sys

    beside = Path(sys.executable).with_name("sfp-rag")
    return str(beside) if beside.exists() else shutil.which("sfp-rag") or "sfp-rag"


def safe_name(model: str) -> str:
    """A model name or path as one file-name part: ``./runs/v1/`` -> ``runs-v1``, ``org/name`` -> ``org-name``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(model)).strip("-.") or "model"


def machine() -> dict:
    """The machine a benchmark ran on (the same record every CLI result carries)."""
    from sfp_rag._utils import machine_info

    return machine_info()


class PeakMemory:
    """Peak anonymous and file-backed resident memory of this process, sampled from /proc/self/status.

    ``ru_maxrss`` counts every resident page, including the pages of memory-mapped files (reclaimable page cache):
    for a build that streams a large .npy memory map it grows with the file, whatever the build itself needs.
    ``RssAnon`` is the memory the process owns; its peak is what has to fit in RAM. Use as a context manager."""

    def __init__(self, interval_s: float = 0.2) -> None:
        import threading

        self.interval_s, self.anon_kib, self.file_kib = interval_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        from sfp_rag.training.memory import proc_fields

        fields = proc_fields(Path("/proc/self/status"), ("RssAnon", "RssFile"))  # bytes
        self.anon_kib = max(self.anon_kib, fields.get("RssAnon", 0) // 1024)
        self.file_kib = max(self.file_kib, fields.get("RssFile", 0) // 1024)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def as_dict(self) -> dict:
        gib = 2**20  # KiB per GiB
        return {"peak_rss_anon_gib": round(self.anon_kib / gib, 3), "peak_rss_file_gib": round(self.file_kib / gib, 3)}
