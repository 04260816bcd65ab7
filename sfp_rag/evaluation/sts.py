"""STS evaluation with the protocol SimCSE, PromptEOL and CSE-SFP report.

Reads the SentEval data layout directly (no SentEval copy): STS12-16 (``STS/STSxx-en-test/STS.{input,gs}.*.txt``),
STS-B (``STS/STSBenchmark/sts-*.csv``) and SICK-R (``SICK/SICK_*.txt``). The score of a pair is the cosine of its
two embeddings; a task's score is the Spearman correlation x100 with the gold scores. For STS12-16 the subsets
are pooled into one list before the correlation (SimCSE's "all" setting); STS-B and SICK-R use their test splits.
Every distinct sentence is embedded once, however many tasks use it.

Extra task names for model selection (never report them as test numbers): ``STSBenchmark-dev`` and
``SICKRelatedness-dev`` (SICK's trial split).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

STS_TASKS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")
DEV_TASKS = ("STSBenchmark-dev", "SICKRelatedness-dev")

# SentEval's subset lists (STS13's SMT subset is not redistributed and SentEval leaves it out too).
STS_SUBSETS = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}


@dataclass
class STSTask:
    """Sentence pairs with gold similarity scores, grouped in subsets."""

    name: str
    subsets: dict[str, tuple[list[str], list[str], np.ndarray]] = field(default_factory=dict)

    def pairs(self) -> tuple[list[str], list[str], np.ndarray]:
        """All subsets pooled, in order."""
        s1 = [s for a, _, _ in self.subsets.values() for s in a]
        s2 = [s for _, b, _ in self.subsets.values() for s in b]
        gold = np.concatenate([g for _, _, g in self.subsets.values()]) if self.subsets else np.zeros(0)
        return s1, s2, gold

    def __len__(self) -> int:
        return sum(len(g) for _, _, g in self.subsets.values())


class STSDataError(ValueError):
    """A file of the STS data is missing or malformed."""


# --- readers ----------------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise STSDataError(f"{path} is missing; point --data at a SentEval data folder (…/senteval)")
    return path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n")


def _float(value: str, path: Path, lineno: int) -> float:
    try:
        return float(value)
    except ValueError:
        raise STSDataError(f"{path}:{lineno}: score {value!r} is not a number") from None


def _read_sts_year(root: Path, task: str) -> STSTask:
    out = STSTask(task)
    folder = root / "STS" / f"{task}-en-test"
    for subset in STS_SUBSETS[task]:
        inputs = _read_lines(folder / f"STS.input.{subset}.txt")
        golds = _read_lines(folder / f"STS.gs.{subset}.txt")
        if inputs and inputs[-1] == "":
            inputs.pop()
        golds = golds[: len(inputs)]
        if len(golds) != len(inputs):
            raise STSDataError(f"{folder}: STS.input.{subset}.txt has {len(inputs)} lines, STS.gs has {len(golds)}")
        s1, s2, gold = [], [], []
        for lineno, (line, g) in enumerate(zip(inputs, golds), start=1):
            if not g.strip():  # unscored pair (STS15/16 files hold some)
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise STSDataError(
                    f"{folder / f'STS.input.{subset}.txt'}:{lineno}: expected 2 tab-separated sentences"
                )
            s1.append(parts[0])
            s2.append(parts[1])
            gold.append(_float(g, folder / f"STS.gs.{subset}.txt", lineno))
        out.subsets[subset] = (s1, s2, np.asarray(gold, dtype=np.float64))
    return out


def _read_columns(
    path: Path, cols: tuple[int, int, int], skip_header: bool
) -> tuple[list[str], list[str], np.ndarray]:
    lines = _read_lines(path)
    s1, s2, gold = [], [], []
    for lineno, line in enumerate(lines, start=1):
        if (skip_header and lineno == 1) or not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) <= max(cols):
            raise STSDataError(f"{path}:{lineno}: expected at least {max(cols) + 1} tab-separated columns")
        s1.append(parts[cols[0]])
        s2.append(parts[cols[1]])
        gold.append(_float(parts[cols[2]], path, lineno))
    return s1, s2, np.asarray(gold, dtype=np.float64)


def load_sts_task(data_dir: str | Path, task: str) -> STSTask:
    """Read one task from a SentEval data folder (the one holding ``STS/`` and ``SICK/``)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise STSDataError(f"STS data folder {root} does not exist; pass --data …/shared/data/senteval")
    if task in STS_SUBSETS:
        return _read_sts_year(root, task)
    if task in ("STSBenchmark", "STSBenchmark-dev"):
        split = "dev" if task.endswith("-dev") else "test"
        return STSTask(
            task, {split: _read_columns(root / "STS" / "STSBenchmark" / f"sts-{split}.csv", (5, 6, 4), False)}
        )
    if task in ("SICKRelatedness", "SICKRelatedness-dev"):
        name = "SICK_trial.txt" if task.endswith("-dev") else "SICK_test_annotated.txt"
        return STSTask(task, {"test": _read_columns(root / "SICK" / name, (1, 2, 3), True)})
    raise ValueError(f"unknown STS task {task!r}; choose from {STS_TASKS + DEV_TASKS}")


# --- scoring ----------------------------------------------------------------------------------------------------


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(x) < 2:
        raise ValueError("Spearman correlation needs at least 2 pairs")
    return float(spearmanr(x, y).statistic)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, d) arrays."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.einsum("nd,nd->n", a, b)


EmbedFn = Callable[[list[str]], np.ndarray]


def evaluate_sts(
    encoder_or_fn,
    data_dir: str | Path,
    tasks: Sequence[str] = STS_TASKS,
    batch_size: int = 64,
) -> dict:
    """Spearman x100 per task, plus ``avg`` over the tasks run.

    Args:
        encoder_or_fn: an ``SFPEncoder`` (anything with ``encode``) or a function from a list of texts to (N, d).
        data_dir: the SentEval data folder.
        tasks: task names (``STS_TASKS`` by default; ``DEV_TASKS`` for model selection).

    Returns:
        ``{"scores": {task: float, ..., "avg": float}, "subsets": {task: {subset: float}}, "pairs": {task: int}}``
    """
    unknown = [t for t in tasks if t not in STS_TASKS + DEV_TASKS]
    if unknown:
        raise ValueError(f"unknown STS task(s) {unknown}; choose from {STS_TASKS + DEV_TASKS}")
    loaded = [load_sts_task(data_dir, t) for t in tasks]
    sentences = sorted({s for task in loaded for a, b, _ in task.subsets.values() for s in (*a, *b)})
    logger.info("embedding %d distinct sentences for %s", len(sentences), ", ".join(tasks))
    if hasattr(encoder_or_fn, "encode"):
        vectors = encoder_or_fn.encode(sentences, batch_size=batch_size)
    else:
        vectors = np.asarray(encoder_or_fn(sentences), dtype=np.float32)
    row = {s: i for i, s in enumerate(sentences)}
    scores: dict[str, float] = {}
    subsets: dict[str, dict[str, float]] = {}
    for task in loaded:
        sims = {}
        for name, (a, b, gold) in task.subsets.items():
            sims[name] = cosine_rows(vectors[[row[s] for s in a]], vectors[[row[s] for s in b]])
            subsets.setdefault(task.name, {})[name] = (
                100 * spearman(sims[name], gold) if len(gold) > 1 else float("nan")
            )
        _, _, gold = task.pairs()
        scores[task.name] = 100 * spearman(np.concatenate(list(sims.values())), gold)
    scores["avg"] = float(np.mean([scores[t.name] for t in loaded]))
    return {"scores": scores, "subsets": subsets, "pairs": {t.name: len(t) for t in loaded}}


def format_table(rows: dict[str, dict[str, float]], tasks: Sequence[str] | None = None) -> str:
    """A markdown table: one row per model, one column per task (and avg)."""
    if not rows:
        return ""
    tasks = list(tasks or next(iter(rows.values())).keys())
    short = {"STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R", "avg": "Avg."}
    header = "| model | " + " | ".join(short.get(t, t) for t in tasks) + " |"
    lines = [header, "|" + "---|" * (len(tasks) + 1)]
    for name, scores in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{scores[t]:.2f}" if t in scores else "-" for t in tasks) + " |")
    return "\n".join(lines)
