from __future__ import annotations

import pytest
import torch

from sfp_rag.embedding.modeling import SFPModel
from sfp_rag.embedding.pooling import gather_positions, pool, pooled_dim, position_ids_from_mask
from sfp_rag.embedding.tokenization import PromptTokenizer

TEXTS = ["a man is playing a guitar", "dogs run", "the cat sat on the mat and then it slept for a very long time"]


def test_gather_positions_matches_indexing():
    hidden = torch.randn(3, 5, 4)
    index = torch.tensor([4, 0, 2])
    out = gather_positions(hidden, index)
    for b in range(3):
        assert torch.equal(out[b], hidden[b, index[b]])


def test_position_ids_from_mask_either_side():
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert position_ids_from_mask(left).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    assert position_ids_from_mask(right).tolist()[0][:2] == [0, 1]


def test_pool_modes():
    r1, r2 = torch.randn(2, 4), torch.randn(2, 4)
    assert torch.equal(pool(r1, r2, "rep2"), r2)
    assert torch.equal(pool(r1, r2, "rep1"), r1)
    n1, n2 = r1 / r1.norm(dim=-1, keepdim=True), r2 / r2.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(pool(r1, r2, "mean"), (n1 + n2) / 2)
    torch.testing.assert_close(pool(r1, r2, "concat"), torch.cat([n1, n2], -1))
    assert pooled_dim(4, "concat") == 8
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(r1, r2, "max")


@pytest.mark.parametrize("preset", ["eol-sum", "sth-also-sum"])
def test_rep1_equals_stage_one_run_alone(tiny_model, bpe_tokenizer, preset):
    """The causal property the method rests on: Rep1 of the full prompt cannot see stage two."""
    model = SFPModel(tiny_model)
    pt = PromptTokenizer(bpe_tokenizer, preset)
    with torch.no_grad():
        full = model(pt(TEXTS))
        for row, text in enumerate(TEXTS):
            from sfp_rag.embedding.prompts import normalize_sentence

            stage_one = pt.template.stage_one(normalize_sentence(text))
            ids = bpe_tokenizer(stage_one, return_tensors="pt")
            alone = tiny_model(**ids).last_hidden_state[0, -1]
            torch.testing.assert_close(full.rep1[row], alone, atol=1e-5, rtol=1e-4)
            # ... while Rep2 does see stage two
            assert not torch.allclose(full.rep2[row], alone, atol=1e-3)


def test_left_and_right_padding_agree(tiny_model, bpe_tokenizer):
    model = SFPModel(tiny_model)
    pt = PromptTokenizer(bpe_tokenizer, "eol-sum")
    items = pt.tokenize(TEXTS)
    with torch.no_grad():
        right = model(pt.collate(items, padding_side="right"))
        left = model(pt.collate(items, padding_side="left"))
    torch.testing.assert_close(left.rep1, right.rep1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(left.rep2, right.rep2, atol=1e-5, rtol=1e-4)


def test_reps_equal_hidden_states_read_by_hand(tiny_model, bpe_tokenizer):
    model = SFPModel(tiny_model)
    pt = PromptTokenizer(bpe_tokenizer, "eol-sum")
    items = pt.tokenize(TEXTS)
    with torch.no_grad():
        out = model(pt.collate(items))
        for row, item in enumerate(items):
            ids = torch.tensor([item.input_ids])
            hidden = tiny_model(input_ids=ids).last_hidden_state[0]  # (L, D), unpadded
            torch.testing.assert_close(out.rep1[row], hidden[item.rep1], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out.rep2[row], hidden[item.rep2], atol=1e-5, rtol=1e-4)
