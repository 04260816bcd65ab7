"""Re-ranking by query likelihood (UPR: Sachan et al., EMNLP 2022, arXiv 2204.07496).

A candidate passage is scored by how likely a causal LM finds the query after it: the mean log-probability of the
query's tokens given ``Passage: <passage>`` and an instruction to write a question about it. No training, no labels:
the LM only reads. It costs one forward pass of the LM per (query, candidate) pair, so it runs over the top ``k`` of
a first-stage run (the hybrid's), never over a corpus.

The pairs of one query share their last tokens (the query), so rows are left-padded and the LM head runs only on
those last positions (``logits_to_keep``): the 262k-word head of Gemma-3 is applied to the query's tokens alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_RERANKER = "gemma3-270m"  # the default backbone, as a plain causal LM (no adapter)
PASSAGE_TOKENS = 256  # a longer candidate is cut to its first 256 tokens (a default index chunk is 256)
# The UPR paper's instruction; the query follows on the same line.
TEMPLATE = "Passage: {passage}\nPlease write a question based on this passage.\nQuestion:"


class QueryLikelihoodReranker:
    """Score (query, passage) pairs by the mean log P(query token | passage prompt, earlier query tokens).

    Opt-in and not used by ``search``: over the default hybrid's top 20 on NFCorpus train (200 queries), its scores
    mixed half and half with the hybrid's (min-max) gained +0.75 nDCG@10 (95% interval -0.05 to +1.53), the LM's
    order alone nothing, at 2 s per query on 2 CPU cores (``benchmarks/rerank_sweep.py``; docs: Results, Ablation).

    Example::

        reranker = QueryLikelihoodReranker.load()
        hits = index.search(query, k=20)
        order = reranker.rerank(query, [(hit, hit.text) for hit in hits])  # [(hit, score)], best first
    """

    def __init__(self, model, tokenizer, batch_size: int = 16, passage_tokens: int = PASSAGE_TOKENS) -> None:
        if batch_size < 1 or passage_tokens < 1:
            raise ValueError(f"batch_size and passage_tokens must be positive, got {batch_size}, {passage_tokens}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.passage_tokens = batch_size, passage_tokens
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def load(
        cls, name_or_path: str | None = None, device: str | None = None, **kwargs: Any
    ) -> QueryLikelihoodReranker:
        """A built-in name (``gemma3-270m``, ``smollm2-135m``), a ``.gguf``, a model folder or a hub id; bf16 where
        the device runs it fast, else fp32."""
        from ..embedding.backbones import load_causal_lm

        model, tokenizer = load_causal_lm(name_or_path or DEFAULT_RERANKER, device)
        return cls(model, tokenizer, **kwargs)

    def _prefix_ids(self, passage: str) -> list[int]:
        ids = self.tokenizer(passage, add_special_tokens=False)["input_ids"][: self.passage_tokens]
        prompt = TEMPLATE.format(passage=self.tokenizer.decode(ids).strip())
        return self.tokenizer(prompt)["input_ids"]  # with the BOS token where the tokenizer adds one

    def query_ids(self, query: str) -> list[int]:
        """The scored tokens: the query after a space, as it continues ``Question:``."""
        if not query.split():
            raise ValueError("an empty query has no likelihood to score")
        return self.tokenizer(" " + " ".join(query.split()), add_special_tokens=False)["input_ids"]

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Mean log-probability of the query's tokens after each passage (higher is better), one float per passage."""
        import torch

        target = self.query_ids(query)
        n = len(target)
        out = np.empty(len(passages), dtype=np.float64)
        device = self.model.device
        for start in range(0, len(passages), self.batch_size):
            rows = [self._prefix_ids(p) + target for p in passages[start : start + self.batch_size]]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):  # left padding: every row ends with the query's n tokens
                ids[i, width - len(row) :] = torch.tensor(row)
                mask[i, width - len(row) :] = 1
            positions = (mask.cumsum(1) - 1).clamp(min=0)  # each row counts from its own first token
            with torch.inference_mode():
                output = self.model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    logits_to_keep=n + 1,
                )
                logits = output.logits[:, :-1].float()  # positions width-n-1 .. width-2 predict the query's tokens
            logp = torch.log_softmax(logits, dim=-1)
            tokens = torch.tensor(target, device=logp.device).expand(len(rows), n)
            out[start : start + len(rows)] = logp.gather(-1, tokens[..., None])[..., 0].mean(1).cpu().numpy()
        return out

    def rerank(self, query: str, candidates: Sequence[tuple[Any, str]]) -> list[tuple[Any, float]]:
        """``(key, passage)`` candidates re-ordered by query likelihood, best first, with their scores."""
        scores = self.score(query, [text for _, text in candidates])
        order = np.argsort(-scores, kind="stable")
        return [(candidates[i][0], float(scores[i])) for i in order]
