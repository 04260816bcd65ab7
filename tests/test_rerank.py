"""Query-likelihood re-ranking (UPR) against a brute-force reference: each pair alone, unpadded, full logits."""

from __future__ import annotations

import pytest
import torch

from sfp_rag.retrieval.rerank import TEMPLATE, QueryLikelihoodReranker

PASSAGES = [
    "Cells divide by mitosis.",
    "The river floods in spring and the town on its bank moves its market to the hill for two months each year.",
    "Bread needs flour, water, salt and time.",
    "Old maps show the coast further east than it is now, because the sea has taken the cliffs.",
    "Tea.",
]


@pytest.fixture(scope="module")
def lm(bpe_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.config._attn_implementation = "sdpa"
    return model


def _brute_force(model, tokenizer, query: str, passage: str, passage_tokens: int) -> float:
    cut = tokenizer.decode(tokenizer(passage, add_special_tokens=False)["input_ids"][:passage_tokens]).strip()
    prefix = tokenizer(TEMPLATE.format(passage=cut))["input_ids"]
    target = tokenizer(" " + query, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prefix + target])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[len(prefix) - 1 + i, t] for i, t in enumerate(target)) / len(target))


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_scores_equal_each_pair_alone_unpadded(lm, bpe_tokenizer, batch_size):
    reranker = QueryLikelihoodReranker(lm, bpe_tokenizer, batch_size=batch_size, passage_tokens=12)
    query = "why does the river flood"
    got = reranker.score(query, PASSAGES)
    want = [_brute_force(lm, bpe_tokenizer, query, p, 12) for p in PASSAGES]
    assert got == pytest.approx(want, abs=1e-4)
    assert len(set(round(x, 4) for x in got)) == len(PASSAGES)  # the passages matter to the score


def test_rerank_orders_by_score_and_keeps_keys(lm, bpe_tokenizer):
    reranker = QueryLikelihoodReranker(lm, bpe_tokenizer, batch_size=2)
    candidates = [(f"d{i}", p) for i, p in enumerate(PASSAGES)]
    ranked = reranker.rerank("bread and salt", candidates)
    scores = dict(zip((k for k, _ in candidates), reranker.score("bread and salt", PASSAGES)))
    assert sorted(k for k, _ in ranked) == sorted(scores)
    assert [s for _, s in ranked] == sorted(scores.values(), reverse=True)
    assert all(scores[k] == pytest.approx(s) for k, s in ranked)


def test_empty_query_and_bad_settings_are_refused(lm, bpe_tokenizer):
    with pytest.raises(ValueError, match="empty query"):
        QueryLikelihoodReranker(lm, bpe_tokenizer).score("   ", PASSAGES)
    with pytest.raises(ValueError, match="positive"):
        QueryLikelihoodReranker(lm, bpe_tokenizer, batch_size=0)
