from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from sfp_rag.evaluation.sts import STS_SUBSETS, STS_TASKS, STSDataError, evaluate_sts, format_table, load_sts_task

# Each pair i of each subset gets a known cosine; gold scores are chosen so each subset is perfectly ranked but
# the pooled list is not, which tells pooled ("all") Spearman apart from the mean of per-subset values.


def _angle_vectors(sentences):
    """A fake embedder: 'A|θ' -> (1, 0); 'B|θ' -> (cos θ, sin θ), so the pair's cosine is cos θ."""
    out = []
    for s in sentences:
        kind, theta = s.split("|")
        t = float(theta)
        out.append([1.0, 0.0] if kind == "A" else [math.cos(t), math.sin(t)])
    return np.asarray(out, dtype=np.float32)


def make_senteval(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a minimal SentEval tree; return per task (cosines, gold) in file order."""
    expected = {}
    rng = np.random.default_rng(0)
    for year, subsets in STS_SUBSETS.items():
        folder = root / "STS" / f"{year}-en-test"
        folder.mkdir(parents=True)
        cos_all, gold_all = [], []
        for k, subset in enumerate(subsets):
            thetas = np.sort(rng.uniform(0.1, 1.5, 4))
            gold = 5 - np.arange(4) + k * 0.3  # monotone within a subset, offset across subsets
            lines = [f"A|{float(t)!r}\tB|{float(t)!r}" for t in thetas]
            gs = [f"{g:.3f}" for g in gold]
            if year == "STS15":  # an unscored pair, as the real STS15/16 files hold
                lines.append("A|0.5\tB|0.5")
                gs.append("")
            (folder / f"STS.input.{subset}.txt").write_text("\n".join(lines) + "\n")
            (folder / f"STS.gs.{subset}.txt").write_text("\n".join(gs) + "\n")
            cos_all.append(np.cos(thetas))
            gold_all.append(gold)
        expected[year] = (np.concatenate(cos_all), np.concatenate(gold_all))
    (root / "STS" / "STSBenchmark").mkdir(parents=True)
    thetas = [0.2, 0.4, 0.9, 1.2]
    golds = [4.0, 4.5, 1.0, 0.5]
    rows = [f"g\tf\ty\t{i}\t{g}\tA|{t!r}\tB|{t!r}" for i, (t, g) in enumerate(zip(thetas, golds))]
    for split in ("test", "dev"):
        (root / "STS" / "STSBenchmark" / f"sts-{split}.csv").write_text("\n".join(rows) + "\n")
    expected["STSBenchmark"] = (np.cos(thetas), np.asarray(golds))
    (root / "SICK").mkdir()
    sick = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
    sick += [f"{i}\tA|{t!r}\tB|{t!r}\t{g}\tNEUTRAL" for i, (t, g) in enumerate(zip(thetas, [5, 4, 3, 1]))]
    (root / "SICK" / "SICK_test_annotated.txt").write_text("\r\n".join(sick) + "\r\n")
    (root / "SICK" / "SICK_trial.txt").write_text("\n".join(sick) + "\n")
    expected["SICKRelatedness"] = (np.cos(thetas), np.asarray([5, 4, 3, 1.0]))
    return expected


@pytest.fixture
def senteval_dir(tmp_path):
    expected = make_senteval(tmp_path / "senteval")
    return tmp_path / "senteval", expected


def test_reader_counts_and_skips_unscored_pairs(senteval_dir):
    root, _ = senteval_dir
    sts15 = load_sts_task(root, "STS15")
    assert len(sts15) == 5 * 4  # the unscored line of each subset is dropped
    assert len(load_sts_task(root, "STSBenchmark")) == 4
    sick = load_sts_task(root, "SICKRelatedness")
    assert len(sick) == 4 and sick.subsets["test"][0][0].startswith("A|")  # header skipped, CRLF stripped


def test_scores_equal_pooled_spearman_computed_by_hand(senteval_dir):
    root, expected = senteval_dir
    result = evaluate_sts(_angle_vectors, root)
    for task in STS_TASKS:
        cos, gold = expected[task]
        assert result["scores"][task] == pytest.approx(100 * spearmanr(cos, gold).statistic, abs=1e-6)
    assert result["scores"]["avg"] == pytest.approx(np.mean([result["scores"][t] for t in STS_TASKS]))
    # pooled differs from the per-subset mean here (each subset alone is perfectly anti-/correlated)
    assert result["scores"]["STS12"] != pytest.approx(np.mean(list(result["subsets"]["STS12"].values())))


def test_encoder_objects_are_accepted(senteval_dir, tiny_encoder):
    root, _ = senteval_dir
    result = evaluate_sts(tiny_encoder, root, tasks=["STSBenchmark-dev", "SICKRelatedness-dev"])
    assert set(result["scores"]) == {"STSBenchmark-dev", "SICKRelatedness-dev", "avg"}
    assert all(-100 <= v <= 100 for v in result["scores"].values())


def test_bad_data_is_reported_with_file_and_line(senteval_dir):
    root, _ = senteval_dir
    bad = root / "STS" / "STSBenchmark" / "sts-test.csv"
    bad.write_text("g\tf\ty\t0\tnot-a-number\ta\tb\n")
    with pytest.raises(STSDataError, match=r"sts-test.csv:1: score 'not-a-number'"):
        load_sts_task(root, "STSBenchmark")
    (root / "STS" / "STS13-en-test" / "STS.gs.FNWN.txt").unlink()
    with pytest.raises(STSDataError, match="STS.gs.FNWN.txt is missing"):
        load_sts_task(root, "STS13")
    with pytest.raises(STSDataError, match="does not exist"):
        load_sts_task(root / "nope", "STS12")
    with pytest.raises(ValueError, match="unknown STS task"):
        evaluate_sts(_angle_vectors, root, tasks=["STS17"])


def test_format_table():
    table = format_table({"m": {"STSBenchmark": 70.123, "avg": 70.123}})
    assert "| m | 70.12 | 70.12 |" in table and "STS-B" in table
