"""Pseudo-queries: a local causal LM writes a search query for passages of a corpus (doc2query, InPars).

``sfp-rag train --corpus DIR --pseudo-queries N`` (or any ``two-pass-title`` run) trains on (query -> passage) pairs
the way ``two-pass-title`` trains on (title -> text): the query under the query prompt is the anchor, its passage
under the document prompt the positive. Titles are written for documents; a generated query is written for each
*passage*, so a corpus without titles (a folder of files) gets the same signal.

The generator is prompted few-shot in plain text (``Passage: ... Query: ...``; the examples below were written for
this module, from no dataset), so a base LM works: the default is the embedder's own backbone, Gemma-3-270M, which
every install has. Decoding is greedy and stops at the end of the line. Small LMs write many generic or off-passage
queries ("what is the purpose of this study?"), so each query is kept only if ``rejection`` finds nothing wrong, and a
query written for several passages is dropped from all of them (``kept_pairs``).

Measured on NFCorpus train, the pairs did not add to titles, nor to crops on a corpus without titles, with or
without the BM25 round trip (``check_round_trip``) (docs/results/domain-adaptation.md), so the ``--corpus`` recipe
leaves them off. Generation is the slow part (312 passages a minute at batch 32 on 2 Xeon cores), so its
results go to a JSONL file a batch at a time, and a run that stops resumes where it was. Each record:
``{"passage_id", "query", "passage", "reason"}`` (``reason`` is null for a kept query, else why it was rejected).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import require_regular_file
from ..embedding.config import DEFAULT_BACKBONE

logger = logging.getLogger(__name__)

DEFAULT_GENERATOR = DEFAULT_BACKBONE  # the embedder's own backbone: every install has it
PSEUDO_QUERIES_FILE = "pseudo_queries.jsonl"  # in a training run's output folder
PASSAGE_WORDS = 40  # a passage closes at the sentence that takes it past this many words (~64 tokens, as trained)
MIN_PASSAGE_WORDS = 12
MIN_QUERY_WORDS, MAX_QUERY_WORDS = 3, 24
PASSAGE_TOKENS = 96  # the generator sees at most this many tokens of a passage

FEW_SHOT = (
    ("The Eiffel Tower is a wrought-iron lattice tower in Paris. It was completed in 1889 as the entrance arch to "
     "the World's Fair and was at first criticised by some of France's leading artists.",
     "when was the eiffel tower built"),
    ("Vitamin D deficiency is common in older adults and is associated with reduced bone density and a higher risk "
     "of hip fractures; supplementation lowered the fracture rate in several trials.",
     "does vitamin d supplementation prevent fractures in older people"),
    ("A hash table stores key-value pairs in an array of buckets; a hash function maps each key to a bucket, so "
     "that lookups take constant time on average.",
     "how does a hash table find a key"),
)  # fmt: skip

# A query about "this study" or "the passage" names nothing a searcher would type.
_DEICTIC = re.compile(
    r"\b(this|the|these|that)\s+(study|studies|research|passage|paper|article|review|text|question|report|trial|"
    r"analysis|author|authors|abstract|document|experiment|results?|findings?|purpose|data)\b",
    re.IGNORECASE,
)
# Question words and auxiliaries that BM25's English stopword list keeps: not content.
_FUNCTION_WORDS = frozenset(
    "what how why when where which who whom whose whether do doe did done can could would should shall may might "
    "must will is are was were be been being has have had".split()
)
_LEAD = re.compile(r"^\s*(query|question|q)\s*[:\-]\s*", re.IGNORECASE)


class QueryGenerationError(ValueError):
    """Pseudo-queries cannot be generated: an unreadable cache file or no passage to write for."""


@dataclass(frozen=True)
class Passage:
    passage_id: str
    text: str


def passages_of(texts: Sequence[str], words: int = PASSAGE_WORDS, min_words: int = MIN_PASSAGE_WORDS) -> list[Passage]:
    """Every document cut into passages of whole sentences, each closed once it reaches ``words`` words (a sentence
    longer than that is a passage of its own; a last passage shorter than ``min_words`` joins the one before it);
    ids are ``"<document>:<passage>"``."""
    from ..retrieval.chunking import sentences_of

    out = []
    for d, text in enumerate(texts):
        groups: list[list[str]] = [[]]
        for sentence in sentences_of(text):
            if sum(len(s.split()) for s in groups[-1]) >= words:
                groups.append([])
            groups[-1].append(sentence)
        if len(groups) > 1 and sum(len(s.split()) for s in groups[-1]) < min_words:
            groups[-2].extend(groups.pop())
        for w, group in enumerate(groups):
            passage = " ".join(" ".join(group).split())
            if len(passage.split()) >= min_words:
                out.append(Passage(f"{d}:{w}", passage))
    return out


def sample_passages(passages: Sequence[Passage], n: int, seed: int = 0) -> list[Passage]:
    """``n`` passages drawn without replacement (all of them when there are fewer), in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(passages))[:n]
    return [passages[i] for i in order]


def clean_query(raw: str) -> str:
    """The first line of a completion, without a leading ``Query:`` and surrounding quotes or spaces."""
    line = raw.strip().split("\n", 1)[0]
    return _LEAD.sub("", line).strip().strip("\"'").strip()


def rejection(query: str, passage: str, query_terms: Sequence[str], passage_terms: set[str]) -> str | None:
    """Why ``query`` is not a usable search query for ``passage`` (None: it is). ``*_terms`` are BM25's analysed
    terms (``bm25.analyze``)."""
    n_words = len(query.split())
    if n_words < MIN_QUERY_WORDS:
        return "too short"
    if n_words > MAX_QUERY_WORDS:
        return "too long"
    if _DEICTIC.search(query):
        return "refers to the passage"
    content = set(query_terms) - _FUNCTION_WORDS
    if not content:
        return "no content word"
    if not passage_terms.intersection(content):
        return "shares no word with the passage"
    if " ".join(query.lower().split()) in " ".join(passage.lower().split()):
        return "copies the passage"
    return None


def check_round_trip(records: Sequence[dict[str, Any]], passages: Sequence[Passage], depth: int) -> list[dict]:
    """Round-trip consistency (Promptagator, Dai et al. 2023, with BM25 as the retriever): a query kept by
    ``rejection`` stays kept only if BM25 over every passage of the corpus ranks a passage of its own document within
    the top ``depth``; the others get the reason "BM25 ranks other documents first". Returns new records (the file is
    not rewritten, so a run may change ``depth`` and reuse its queries)."""
    from ..retrieval.bm25 import BM25Index

    out = [dict(r) for r in records]
    todo = [r for r in out if r.get("reason") is None]
    if not todo or depth < 1:
        return out
    document = [p.passage_id.split(":", 1)[0] for p in passages]
    _, ids = BM25Index.build([p.text for p in passages]).search([r["query"] for r in todo], depth)
    for record, hits in zip(todo, ids):
        own = record["passage_id"].split(":", 1)[0]
        if not any(i >= 0 and document[i] == own for i in hits):
            record["reason"] = "BM25 ranks other documents first"
    return out


def kept_pairs(records: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(query, passage) of the kept records; a query written for two or more passages is generic: dropped."""
    counts = Counter(r["query"].lower() for r in records if r.get("reason") is None)
    return [(r["query"], r["passage"]) for r in records if r.get("reason") is None and counts[r["query"].lower()] == 1]


class QueryGenerator:
    """Write one query per passage with a causal LM: few-shot prompts, batched greedy decoding to the line's end."""

    def __init__(self, model, tokenizer, batch_size: int = 32, max_new_tokens: int = 32) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        tokenizer.padding_side = "left"  # generation continues every row from its last token
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def load(cls, name_or_path: str | None = None, device: str | None = None, **kwargs: Any) -> QueryGenerator:
        """A built-in name (``gemma3-270m``, ``smollm2-135m``), a ``.gguf``, a model folder or a hub id; bf16 where
        the device runs it fast, else fp32."""
        import torch

        from ..embedding.backbones import load_causal_lm

        model, tokenizer = load_causal_lm(name_or_path or DEFAULT_GENERATOR, device)
        torch.manual_seed(0)
        return cls(model, tokenizer, **kwargs)

    def prompt(self, passage: str) -> str:
        ids = self.tokenizer(passage, add_special_tokens=False)["input_ids"][:PASSAGE_TOKENS]
        shots = "".join(f"Passage: {p}\nQuery: {q}\n\n" for p, q in FEW_SHOT)
        return f"{shots}Passage: {self.tokenizer.decode(ids).strip()}\nQuery:"

    def generate(self, passages: Sequence[str]) -> list[str]:
        """One cleaned query per passage (possibly empty), in order."""
        import torch

        out: list[str] = []
        for start in range(0, len(passages), self.batch_size):
            prompts = [self.prompt(p) for p in passages[start : start + self.batch_size]]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.model.device)
            with torch.inference_mode():
                ids = self.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    repetition_penalty=1.1,
                    stop_strings=["\n"],
                    tokenizer=self.tokenizer,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            texts = self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            out.extend(clean_query(t) for t in texts)
        return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a pseudo-query file (empty when it does not exist); a damaged last line (a run killed while
    writing) is dropped with a warning, any other damage is an error."""
    if not path.exists():
        return []
    require_regular_file(path, "pseudo-query file")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for lineno, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not {"passage_id", "query", "passage"} <= record.keys():
                raise ValueError("missing passage_id, query or passage")
        except ValueError as err:
            if lineno == len(lines):
                logger.warning("%s: dropping a damaged last line (a run stopped while writing it)", path)
                break
            raise QueryGenerationError(f"{path}:{lineno}: not a pseudo-query record ({err}); delete it") from None
        records.append(record)
    return records


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line left unfinished by a killed run, so that appended records start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data[: data.rfind(b"\n") + 1]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(keep)
        tmp.replace(path)


@dataclass
class GenerationResult:
    pairs: list[tuple[str, str]]  # kept (query, passage)
    generated: int  # passages with a query in the file (this run and earlier ones)
    new: int  # written by this run
    seconds: float  # this run's generation time
    rejected: dict[str, int]  # reason -> count

    def stats(self) -> dict[str, Any]:
        return {"kept": len(self.pairs), "written": self.generated, "new": self.new,
                "seconds": round(self.seconds, 1), "rejected": self.rejected}  # fmt: skip

    def summary(self) -> str:
        rate = f", {60 * self.new / self.seconds:.0f} a minute" if self.new and self.seconds else ""
        why = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items(), key=lambda kv: -kv[1]))
        return (
            f"pseudo-queries: {len(self.pairs)} kept of {self.generated} written ({self.new} now in "
            f"{self.seconds:.0f} s{rate}); rejected: {why or 'none'}"
        )


def generate_pairs(
    texts: Sequence[str],
    path: str | Path,
    n: int,
    generator: QueryGenerator | Callable[[], QueryGenerator],
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    round_trip: int = 0,
) -> GenerationResult:
    """Generate queries for ``n`` passages of the documents ``texts`` (sampled with ``seed``) into ``path``,
    continuing what is already there; ``generator`` may be a callable, loaded only if something is left to write.
    ``round_trip`` > 0 keeps only the queries that pass ``check_round_trip`` at that depth (0: off)."""
    from ..retrieval.bm25 import analyze

    path = Path(path)
    every = passages_of(texts)
    passages = sample_passages(every, n, seed)
    if not passages:
        raise QueryGenerationError("the corpus has no passage of at least 12 words to write a query for")
    records = read_records(path)
    by_id = {p.passage_id: p.text for p in passages}
    changed = [r["passage_id"] for r in records if r["passage_id"] in by_id and by_id[r["passage_id"]] != r["passage"]]
    if changed:
        raise QueryGenerationError(
            f"{path} was written for another corpus (passage {changed[0]} differs, {len(changed)} in all); delete it "
            "or write to another folder"
        )
    done = {r["passage_id"] for r in records}
    todo = [p for p in passages if p.passage_id not in done]
    seconds, new = 0.0, 0
    if todo:
        gen = generator if hasattr(generator, "generate") else generator()
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(path)
        with path.open("a", encoding="utf-8") as f:
            for start in range(0, len(todo), gen.batch_size):
                batch = todo[start : start + gen.batch_size]
                t0 = time.perf_counter()
                queries = gen.generate([p.text for p in batch])
                seconds += time.perf_counter() - t0
                terms = analyze(queries + [p.text for p in batch])
                for i, (p, q) in enumerate(zip(batch, queries)):
                    reason = rejection(q, p.text, terms[i], set(terms[len(batch) + i]))
                    record = {"passage_id": p.passage_id, "query": q, "passage": p.text, "reason": reason}
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                    records.append(record)
                f.flush()
                new += len(batch)
                if progress is not None:
                    progress(len(records), len(passages))
    wanted = {p.passage_id for p in passages}
    records = [r for r in records if r["passage_id"] in wanted]
    if round_trip:
        records = check_round_trip(records, every, round_trip)
    rejected = Counter(r["reason"] for r in records if r.get("reason") is not None)
    pairs = kept_pairs(records)
    generic = sum(1 for r in records if r.get("reason") is None) - len(pairs)
    if generic:
        rejected["written for several passages"] = generic
    return GenerationResult(pairs, len(records), new, seconds, dict(rejected))
