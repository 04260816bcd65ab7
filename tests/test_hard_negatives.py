"""BM25-mined hard negatives for two-pass-title: the mining against a brute-force scoring of every text, the draws,
the loss with them, and a run that uses them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfp_rag.retrieval.bm25 import BM25Index
from sfp_rag.training.config import TrainConfig
from sfp_rag.training.hard_negatives import HardNegatives, mine_hard_negatives, text_of
from sfp_rag.training.trainer import ObjectiveStep, train
from tests.test_training import _config
from tests.test_training_batches import PASSAGES, _lora_model, _rep2_alone

UNITS = [
    "Salt marsh plants\nSalt marsh plants grow where the tide floods the ground twice a day.",
    "Salt in the diet\nSalt in the diet raises blood pressure in some people who eat much of it.",
    "Marsh birds\nHerons and egrets hunt fish in the shallow water of a salt marsh.",
    "Bread\nBread is baked from flour, water and yeast; salt adds taste.",
    "Tides\nThe moon pulls the sea, and the tide rises and falls twice a day.",
    "An untitled unit about salt marsh plants and tides, which gets no negatives of its own.",
    "Blood pressure\nBlood pressure rises with age and with salt in the diet.",
    "Herons and egrets hunt fish\nHerons and egrets hunt fish in the shallow water of a salt marsh.",  # a copy
]


def _brute_force(units, depth, guard):
    """Every text scored for every title (BM25 over all of them, no cut-off), then the rule of the docstring: the top
    ``depth`` hits other than the unit's own text, less copies of it and those at or above ``guard`` x its score."""
    texts = [text_of(u) for u in units]
    index = BM25Index.build(texts)
    out = []
    for i, unit in enumerate(units):
        title, found, _ = unit.partition("\n")
        if not found:
            out.append([])
            continue
        scores, ids = index.search([title], len(texts))
        ranked = [int(j) for j in ids[0] if j >= 0]
        if i not in ranked[: depth + 1]:  # its own text must be among the hits looked at
            out.append([])
            continue
        score = {int(j): float(s) for j, s in zip(ids[0], scores[0])}
        others = [j for j in ranked if j != i][:depth]  # the top `depth` other hits, then the filters
        out.append([j for j in others if texts[j] != texts[i] and score[j] < guard * score[i]])
    return out


@pytest.mark.parametrize("depth, guard", [(20, 0.9), (2, 0.9), (20, 1.0), (20, 0.3)])
def test_mining_matches_a_brute_force_scoring(depth, guard):
    mined = mine_hard_negatives(UNITS, depth=depth, guard=guard)
    expected = _brute_force(UNITS, depth, guard)
    assert [c.tolist() for c in mined.candidates] == expected
    assert mined.candidates[5].size == 0  # untitled: none
    assert 7 not in mined.candidates[2] and 2 not in mined.candidates[7]  # copies of one text: never each other's
    if (depth, guard) == (20, 1.0):
        assert 1 in mined.candidates[6]  # "Salt in the diet" is a near miss for "Blood pressure"


def test_draws_skip_the_batch_and_repeat_nothing():
    mined = HardNegatives([np.array([1, 2, 3]), np.array([0, 2]), np.array([], dtype=np.int64), np.array([2, 4])])
    rows = [0, 1]
    for seed in range(20):
        drawn = mined.sample(rows, 2, np.random.default_rng(seed))
        assert not set(drawn) & set(rows) and len(drawn) == len(set(drawn))
        assert set(drawn) <= {2, 3}  # row 1's only candidate outside the batch is 2, which row 0 may take first
    assert mined.sample([2], 1, np.random.default_rng(0)) == []
    assert mined.sample([0, 3], 1, np.random.default_rng(3)) == mined.sample([0, 3], 1, np.random.default_rng(3))
    assert mined.stats() == {"units": 4, "with_negatives": 3, "mean_candidates": 2.33}


def test_title_loss_takes_the_negatives_as_extra_document_prompt_columns(tiny_model_dir, tmp_path):
    """Brute force: anchors (titles, query prompt), positives (texts) and negatives (texts), each embedded alone
    under its prompt, then InfoNCE over positives and negatives; a crop batch of title_share < 1 ignores them."""
    from sfp_rag.training.losses import info_nce

    config, sfp, tokenizer = _lora_model(
        tiny_model_dir, tmp_path, objective="two-pass-title", query_template="question-sum", lora_dropout=0.0
    )
    titles = ["Cells", "Rivers", "Maps", "Bread"]
    units = [f"{t}\n{p}" for t, p in zip(titles, PASSAGES[:4])]
    negatives = PASSAGES[4:7]
    step = ObjectiveStep(config, tokenizer, "cpu", distributed=False)
    sfp.eval()
    with torch.no_grad():
        loss, tokens = step(sfp, units, np.random.default_rng(0), negatives)
        anchor = _rep2_alone(sfp, tokenizer, config, "question-sum", titles)
        positive = _rep2_alone(sfp, tokenizer, config, "eol-sum", PASSAGES[:4])
        extra = _rep2_alone(sfp, tokenizer, config, "eol-sum", negatives)
        assert loss.item() == pytest.approx(info_nce(anchor, positive, 0.05, negatives=extra).item(), abs=1e-5)
        plain, fewer = step(sfp, units, np.random.default_rng(0))
        assert loss.item() > plain.item() and tokens > fewer
        config.title_share = 0.01  # (almost) every batch a crop batch: the negatives play no part
        crops = ObjectiveStep(config, tokenizer, "cpu", distributed=False)
        with_negatives, _ = crops(sfp, units, np.random.default_rng(1), negatives)
        without, _ = crops(sfp, units, np.random.default_rng(1))
        assert with_negatives.item() == pytest.approx(without.item(), abs=1e-6)


def test_a_run_with_hard_negatives_records_them_and_resumes_exactly(tiny_model_dir, tmp_path):
    data = tmp_path / "titled.jsonl"
    rows = [{"title": u.partition("\n")[0], "text": text_of(u)} for u in UNITS if "\n" in u] * 2
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = dict(objective="two-pass-title", hard_negatives=1, batch_size=4, lora_dropout=0.0, max_text_tokens=16)
    straight, resumed = [], []
    train(_config(tiny_model_dir, data, tmp_path / "a", **kw), callback=lambda s, x: straight.append(x),
          show_progress=False)  # fmt: skip
    plain = []
    train(_config(tiny_model_dir, data, tmp_path / "p", **{**kw, "hard_negatives": 0}),
          callback=lambda s, x: plain.append(x), show_progress=False)  # fmt: skip
    assert not np.allclose(straight, plain)  # the negatives changed the loss
    saved = json.loads((tmp_path / "a" / "sfp_config.json").read_text())
    assert saved["training"]["hard_negatives"] == 1 and saved["training"]["hard_negative_guard"] == 0.9
    assert saved["training"]["hard_negative_stats"]["with_negatives"] > 0

    def crash(step, loss):
        if step == 4:
            raise KeyboardInterrupt

    config = _config(tiny_model_dir, data, tmp_path / "b", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(config, callback=crash, show_progress=False)
    train(config, resume=True, callback=lambda s, x: resumed.append(x), show_progress=False)  # from step 3
    np.testing.assert_allclose(resumed, straight[3:], rtol=1e-5)  # the same negatives drawn again


def test_hard_negative_settings_are_checked(tiny_model_dir, tmp_path):
    base = dict(data="x", output_dir=str(tmp_path), model=str(tiny_model_dir))
    with pytest.raises(ValueError, match="mined for titles"):
        TrainConfig(**base, objective="two-pass-crops", hard_negatives=1)
    with pytest.raises(ValueError, match="grad_cache"):
        TrainConfig(**base, objective="two-pass-title", hard_negatives=1, grad_cache=4)
    with pytest.raises(ValueError, match="hard_negative_guard"):
        TrainConfig(**base, objective="two-pass-title", hard_negatives=1, hard_negative_guard=0)
    with pytest.raises(ValueError, match="hard_negatives must be"):
        TrainConfig(**base, objective="two-pass-title", hard_negatives=-1)
