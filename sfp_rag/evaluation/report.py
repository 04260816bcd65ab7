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

# training.config.OBJECTIVES, repeated because evaluation does not import training (a test keeps them equal); a
# folder name is matched against them in this order, the two-pass names before "single-pass"
OBJECTIVE_NAMES = (
    "two-pass-dropout", "two-pass-prompts", "two-pass-crops", "two-pass-ict", "two-pass-title", "single-pass",
)  # fmt: skip


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
            return "train", {"label": _run_name(f) or f.parent.name, "records": records, "path": str(f)}
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
    data["source"] = f.stem  # tells apart rows of the same name from different files
    return kind, data


def build_report(
    paths: list[Path], out_dir: Path, title: str = "sfp_rag report", systems: dict[str, str] | None = None
) -> Path:
    """Write ``out_dir/report.md`` and its plots; returns the markdown path.

    Args:
        systems: keep only these systems of the STS and BEIR results, shown under new names (label in the result
            files -> name in the report), in this order; None keeps every system under its own label.
    """
    require("matplotlib", "Plots", "pip install 'sfp-rag[eval]'")
    import matplotlib

    matplotlib.use("Agg")
    groups = read_results(paths)
    if systems:
        groups = _select(groups, systems)
    if not any(groups.values()):
        raise ValueError("no result files found: pass JSON files written by `sfp-rag eval ... -o` or train_log.jsonl")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", ""]
    if groups["sts"]:
        parts += _sts_section(groups["sts"], out_dir)
    if groups["beir"]:
        parts += _beir_section(groups["beir"], out_dir, order=list(systems.values()) if systems else None)
    if groups["space"]:
        parts += _space_section(groups["space"], out_dir)
    if groups["train"]:
        parts += _train_section(groups["train"], out_dir)
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path


def _select(groups: dict[str, list[dict]], systems: dict[str, str]) -> dict[str, list[dict]]:
    """Only the chosen systems, renamed and in the given order; a label that matches nothing is an error."""
    found: set[str] = set()
    out = {**groups, "space": [], "train": []}
    for kind in ("sts", "beir"):
        kept = []
        for r in groups[kind]:
            if kind == "sts":
                if r["label"] in systems:
                    kept.append({**r, "label": systems[r["label"]]})
                    found.add(r["label"])
                continue
            scores = {systems[k]: v for k, v in r["scores"].items() if k in systems}
            found.update(k for k in r["scores"] if k in systems)
            if scores:
                kept.append({**r, "scores": scores})
        out[kind] = kept
    missing = [label for label in systems if label not in found]
    if missing:
        raise ValueError(f"no system labelled {missing} in the result files (the tables of a full report list them)")
    return out


# Goal lines drawn on the plots: unsupervised SimCSE-BERT-base (Gao et al. 2021), the reference the project aims at.
STS_GOAL = {"STSBenchmark": 76.85, "avg": 76.25}
# BEIR systems drawn as reference lines rather than bars: the keyword baseline and the supervised peer.
REFERENCE_SYSTEMS = ("BM25", "MiniLM")
TASK_NAMES = {"STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R", "avg": "Avg."}


def _sts_section(results: list[dict], out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    from .sts import format_table

    # dev-split results (tuning data: STS-B dev, SICK trial) get a table of their own, never columns of "-" beside
    # the test tasks
    def is_dev(r: dict) -> bool:
        return all(t.endswith("-dev") or t == "avg" for t in r["scores"])

    dev = [r for r in results if is_dev(r)]
    tuning = ["### Tuning data (dev splits)", "", format_table(*_sts_rows(dev)), ""] if dev else []
    results = [r for r in results if not is_dev(r)]
    if not results:
        return ["## STS (Spearman x100)", "", *tuning]
    rows, tasks = _sts_rows(results)
    fig, ax = plt.subplots(figsize=(11, 4.2))
    width = 0.8 / len(rows)
    for i, (label, scores) in enumerate(rows.items()):
        ax.bar([j + i * width for j in range(len(tasks))], [scores.get(t, 0) for t in tasks], width, label=label)
    for task, goal in STS_GOAL.items():  # the goal, drawn over its task's group of bars
        if task in tasks:
            j = tasks.index(task)
            ax.hlines(goal, j - width, j + 0.8, colors="black", linestyles="--", linewidth=1.2)
    ax.plot([], [], "k--", label="goal: unsup. SimCSE-BERT-base")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))])
    ax.set_xticklabels([TASK_NAMES.get(t, t) for t in tasks])
    ax.set_ylabel("Spearman x100")
    ax.set_ylim(0, 100)  # from zero: bar heights compare honestly
    ax.set_title("STS: Spearman correlation x100 (higher is better)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over the bars
    fig.tight_layout()
    fig.savefig(out_dir / "sts.png", dpi=120)
    plt.close(fig)
    return ["## STS (Spearman x100)", "", format_table(rows, tasks), "", "![STS](sts.png)", "", *tuning]


def _sts_rows(results: list[dict]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """One row per result; the columns are every task any of them has (first-seen order), then the average."""
    rows = {r["label"]: r["scores"] for r in results}
    tasks = list(dict.fromkeys(t for scores in rows.values() for t in scores if t != "avg"))
    return rows, tasks + ["avg"]


def _beir_section(results: list[dict], out_dir: Path, order: list[str] | None = None) -> list[str]:
    """One table per dataset and split (the systems of every result file for it, in file order, or in ``order``),
    and one plot of nDCG@10 for the test splits: systems as bars per dataset, BM25 and MiniLM as reference lines."""
    from .beir import format_beir_table

    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        entry = merged.setdefault((r["dataset"], r["split"]), {"queries": r["queries"], "documents": r["documents"]})
        scores = entry.setdefault("scores", {})
        for name, row in r["scores"].items():
            if name in scores and scores[name] != row:  # another run of the same system: keep both, named apart
                name = f"{name} [{r.get('source', '?')}]"
            scores[name] = row
    if order:
        for entry in merged.values():
            entry["scores"] = {name: entry["scores"][name] for name in order if name in entry["scores"]}
    out = ["## BEIR retrieval (x100)", ""]
    for (dataset, split), entry in merged.items():
        out += [
            f"### {dataset} ({split}: {entry['queries']} queries, {entry['documents']} documents)",
            "",
            format_beir_table(entry["scores"]),
            "",
        ]
    test = {d: e["scores"] for (d, split), e in merged.items() if split == "test"}
    if test:
        _beir_plot(test, out_dir / "beir.png")
        out += ["![BEIR nDCG@10](beir.png)", ""]
    return out


def _is_reference(label: str) -> str | None:
    """BM25 (the keyword baseline, not a BM25 hybrid) or MiniLM (the supervised peer), drawn as lines."""
    low = label.lower()
    if low.startswith("bm25"):
        return "BM25"
    return "MiniLM" if "minilm" in low and "+" not in low else None


def _beir_plot(scores: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib.pyplot as plt

    datasets = sorted(scores)
    systems = list(dict.fromkeys(s for d in datasets for s in scores[d] if not _is_reference(s)))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(len(systems), 1)
    palette = plt.get_cmap("tab20" if len(systems) > 10 else "tab10")  # no two systems share a colour (up to 20)
    for i, system in enumerate(systems):
        xs = [j + i * width for j, d in enumerate(datasets) if system in scores[d]]
        ys = [scores[d][system]["nDCG@10"] for d in datasets if system in scores[d]]
        ax.bar(xs, ys, width, label=system, color=palette(i % palette.N))
    styles = {"BM25": ("black", "--"), "MiniLM": ("tab:gray", ":")}
    for j, d in enumerate(datasets):
        for label, value in scores[d].items():
            ref = _is_reference(label)
            if ref:
                color, style = styles[ref]
                ax.hlines(value["nDCG@10"], j - width, j + 0.8, colors=color, linestyles=style, linewidth=1.4)
    for ref, (color, style) in styles.items():
        if any(_is_reference(lbl) == ref for d in datasets for lbl in scores[d]):
            ax.plot([], [], color=color, linestyle=style, label=f"{ref} (reference)")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))])
    ax.set_xticklabels(datasets)
    ax.set_ylabel("nDCG@10 x100 (test)")
    ax.set_ylim(0, 100)
    ax.set_title("BEIR retrieval: nDCG@10 on the test qrels (higher is better)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    """A loss panel per objective (their losses are not on one scale) and the STS-B dev curve of every run."""
    import matplotlib.pyplot as plt

    lines = [
        "## Training",
        "",
        "| run | objective | steps | final loss | examples/s | STS-B dev (by step) |",
        "|---|---|---|---|---|---|",
    ]
    runs = [log for log in logs if any("loss" in r for r in log["records"])]
    objectives = list(dict.fromkeys(_objective(log) for log in runs)) or ["run"]
    fig, axes = plt.subplots(1, len(objectives) + 1, figsize=(4.2 * (len(objectives) + 1), 3.6), squeeze=False)
    dev_ax = axes[0][-1]
    for log in runs:
        points = [r for r in log["records"] if "loss" in r]
        objective = _objective(log)
        ax = axes[0][objectives.index(objective)]
        ax.plot([r["step"] for r in points], [r["loss"] for r in points], label=log["label"])
        dev = [r for r in log["records"] if "stsb_dev" in r]
        if dev:
            dev_ax.plot([r["step"] for r in dev], [r["stsb_dev"] for r in dev], marker="o", label=log["label"])
        speed = sum(r["examples_per_s"] for r in points) / len(points)
        shown = ", ".join(f"{r['stsb_dev']:.2f} ({r['step']})" for r in dev) or "-"
        lines.append(
            f"| {log['label']} | {objective} | {points[-1]['step']} | {points[-1]['loss']:.2e} | {speed:.1f} | "
            f"{shown} |"
        )
    for objective, ax in zip(objectives, axes[0]):
        ax.set_title(f"{objective}: InfoNCE loss")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    dev_ax.set_title("STS-B dev, Spearman x100")
    dev_ax.set_xlabel("step")
    if dev_ax.lines:
        dev_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=120)
    plt.close(fig)
    return lines + ["", "![training loss per objective and STS-B dev](loss.png)", ""]


def _run_name(log_path: Path) -> str | None:
    """NAME of a ``train_log_NAME.jsonl`` (logs collected beside each other, as in ``benchmarks/results/ablation``);
    None for a run folder's own ``train_log.jsonl``."""
    prefix = "train_log_"
    return log_path.stem[len(prefix) :] if log_path.stem.startswith(prefix) else None


def _objective(log: dict) -> str:
    """The objective of a run: from the sfp_config.json next to its log (``train_config_NAME.json`` beside a
    ``train_log_NAME.jsonl``), else its folder name."""
    path = Path(log["path"])
    run = _run_name(path)
    config = path.parent / (f"train_config_{run}.json" if run else "sfp_config.json")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        return data.get("training", data)["objective"]  # an sfp_config.json, or its bare training section
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        name = path.parent.name
        return next((o for o in OBJECTIVE_NAMES if o in name), name)
