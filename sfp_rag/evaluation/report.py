"""``sfp-rag report``: a markdown report with PNG plots, built from the JSON files the eval commands write.

Inputs are result files (``eval sts``/``eval beir``/``eval space`` with ``-o``; each says its ``kind`` and
``label``) and training logs (``train_log.jsonl``). Output: ``report.md`` plus ``sts.png`` (scores per task),
``alignment_uniformity.png`` (the models as points) and ``loss.png`` (training curves), only for what was given.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .._utils import atomic_write_text, require

logger = logging.getLogger(__name__)


# What each kind of result file must hold for its section of the report.
_REQUIRED = {
    "sts": {"scores": dict},
    "beir": {"scores": dict, "dataset": str, "split": str, "queries": int, "documents": int},
    "space": {"alignment": float, "uniformity": float, "split": str},
}
_NOT_A_RESULT = "expected the JSON that `sfp-rag eval ... -o` writes (with a 'kind') or a train_log.jsonl"


def read_results(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """Group result files (files or folders of them) by kind; training logs go under "train".

    Files found inside a folder that are not results are skipped (logged); a file named directly that is not a result
    is an error that says what was expected.
    """
    groups: dict[str, list[dict[str, Any]]] = {"sts": [], "beir": [], "space": [], "train": []}
    files: list[tuple[Path, bool]] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist; pass result files or folders of them")
        files.extend([(f, False) for f in sorted(p.rglob("*.json*"))] if p.is_dir() else [(p, True)])
    for f, named in files:
        try:
            kind, data = _read_result(f)
        except ValueError as err:
            if named:
                raise
            logger.info("skipping %s (%s)", f, err)
            continue
        groups[kind].append(data)
    return groups


def _read_result(f: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = f.read_text(encoding="utf-8")
        if f.name.endswith(".jsonl"):
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
            if not records or not all(isinstance(r, dict) and isinstance(r.get("step"), int) for r in records):
                raise ValueError("its lines are not training-log records with a 'step'")
            return "train", {"label": f.parent.name, "records": records, "path": str(f)}
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{f} is not a result file: not valid JSON ({err}); {_NOT_A_RESULT}") from None
    except ValueError as err:
        raise ValueError(f"{f} is not a result file: {err}; {_NOT_A_RESULT}") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in _REQUIRED:
        raise ValueError(f"{f} is not a result file (kind {kind!r}); {_NOT_A_RESULT}")
    for key, expected in _REQUIRED[kind].items():
        value = data.get(key)
        if not isinstance(value, expected) and not (expected is float and isinstance(value, int)):
            raise ValueError(f"{f} is a damaged {kind} result: {key!r} should be a {expected.__name__}")
    data["label"] = data.get("label") or f.stem
    return kind, data


def build_report(paths: list[Path], out_dir: Path, title: str = "sfp_rag report") -> Path:
    """Write ``out_dir/report.md`` and its plots; returns the markdown path."""
    require("matplotlib", "Plots", "pip install 'sfp-rag[eval]'")
    import matplotlib

    matplotlib.use("Agg")
    groups = read_results(paths)
    if not any(groups.values()):
        raise ValueError("no result files found: pass JSON files written by `sfp-rag eval ... -o` or train_log.jsonl")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", ""]
    if groups["sts"]:
        parts += _sts_section(groups["sts"], out_dir)
    if groups["beir"]:
        parts += _beir_section(groups["beir"])
    if groups["space"]:
        parts += _space_section(groups["space"], out_dir)
    if groups["train"]:
        parts += _train_section(groups["train"], out_dir)
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path


def _sts_section(results: list[dict], out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    from .sts import format_table

    rows = {r["label"]: r["scores"] for r in results}
    tasks = [t for t in next(iter(rows.values())) if t != "avg"] + ["avg"]
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / len(rows)
    for i, (label, scores) in enumerate(rows.items()):
        ax.bar([j + i * width for j in range(len(tasks))], [scores.get(t, 0) for t in tasks], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))])
    ax.set_xticklabels([{"STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R"}.get(t, t) for t in tasks])
    ax.set_ylabel("Spearman x100")
    ax.set_ylim(min(min(s.get(t, 100) for t in tasks) for s in rows.values()) - 5, 100)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over the bars
    fig.tight_layout()
    fig.savefig(out_dir / "sts.png", dpi=120)
    plt.close(fig)
    return ["## STS (Spearman x100)", "", format_table(rows, tasks), "", "![STS](sts.png)", ""]


def _beir_section(results: list[dict]) -> list[str]:
    """One table per dataset and split: the systems of every result file for it, in file order."""
    from .beir import format_beir_table

    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        entry = merged.setdefault((r["dataset"], r["split"]), {"queries": r["queries"], "documents": r["documents"]})
        entry.setdefault("scores", {}).update(r["scores"])
    out = ["## BEIR retrieval (x100)", ""]
    for (dataset, split), entry in merged.items():
        out += [
            f"### {dataset} ({split}: {entry['queries']} queries, {entry['documents']} documents)",
            "",
            format_beir_table(entry["scores"]),
            "",
        ]
    return out


def _space_section(results: list[dict], out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for r in results:
        ax.scatter(r["uniformity"], r["alignment"], s=40)
        ax.annotate(
            r["label"], (r["uniformity"], r["alignment"]), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlabel("uniformity (lower is better)")
    ax.set_ylabel("alignment (lower is better)")
    fig.tight_layout()
    fig.savefig(out_dir / "alignment_uniformity.png", dpi=120)
    plt.close(fig)
    lines = [
        "## Semantic space (STS-B " + results[0]["split"] + ")",
        "",
        "| model | alignment | uniformity | ratio = -uniformity/alignment |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['label']} | {r['alignment']:.3f} | {r['uniformity']:.3f} | {r['ratio']:.2f} |" for r in results]
    return lines + ["", "![alignment and uniformity](alignment_uniformity.png)", ""]


def _train_section(logs: list[dict], out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    lines = [
        "## Training",
        "",
        "| run | steps | final loss | examples/s | STS-B dev (by step) |",
        "|---|---|---|---|---|",
    ]
    for log in logs:
        points = [r for r in log["records"] if "loss" in r]
        if not points:
            continue
        ax.plot([r["step"] for r in points], [r["loss"] for r in points], label=log["label"])
        speed = sum(r["examples_per_s"] for r in points) / len(points)
        dev = ", ".join(f"{r['stsb_dev']:.2f} ({r['step']})" for r in log["records"] if "stsb_dev" in r) or "-"
        lines.append(f"| {log['label']} | {points[-1]['step']} | {points[-1]['loss']:.2e} | {speed:.1f} | {dev} |")
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=120)
    plt.close(fig)
    return lines + ["", "![training loss](loss.png)", ""]
