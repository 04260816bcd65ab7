"""Pseudo-queries: passages, the checks on a generated query, the resumable file, the generator, and training on
the pairs (tiny models; no download)."""

from __future__ import annotations

import json

import pytest

from sfp_rag.retrieval.bm25 import analyze
from sfp_rag.training.query_generation import (
    PASSAGE_TOKENS,
    PSEUDO_QUERIES_FILE,
    QueryGenerationError,
    QueryGenerator,
    check_round_trip,
    clean_query,
    generate_pairs,
    kept_pairs,
    passages_of,
    read_records,
    rejection,
    sample_passages,
)

DOCS = [
    "Cats sleep for most of the day. They hunt at dusk and dawn when mice are about. "
    "A cat's whiskers sense the width of a gap. Domestic cats descend from the African wildcat. "
    "Their eyes hold a reflective layer that helps them see in dim light. Kittens open their eyes after a week. "
    "A cat purrs when content, and sometimes when it is hurt or frightened.",
    "Green tea holds catechins, a kind of antioxidant. Brewing it too hot makes it bitter. "
    "Japanese sencha is steamed, while Chinese green teas are pan-fired. Matcha is ground from shaded leaves. "
    "The first harvest of spring gives the sweetest leaves. Green tea has less caffeine than coffee. "
    "Stored in the light, the leaves lose their colour and their taste within months.",
    "Short.",
]


class FakeGenerator:
    """Writes 'what about <the passage's 3rd and 5th words>' and counts the passages it was asked for."""

    batch_size = 2

    def __init__(self) -> None:
        self.seen: list[str] = []

    def generate(self, passages):
        self.seen.extend(passages)
        return [f"what about {p.split()[2]} {p.split()[4]}" for p in passages]


def _reason(query: str, passage: str) -> str | None:
    q, p = analyze([query, passage])
    return rejection(query, passage, q, set(p))


def test_passages_are_whole_sentences_in_order_covering_each_document():
    passages = passages_of(DOCS, words=12, min_words=5)
    assert [p.passage_id.split(":")[0] for p in passages] == ["0"] * len(
        [p for p in passages if p.passage_id.startswith("0:")]
    ) + ["1"] * len([p for p in passages if p.passage_id.startswith("1:")])
    for d in (0, 1):
        joined = " ".join(p.text for p in passages if p.passage_id.startswith(f"{d}:"))
        assert joined == " ".join(DOCS[d].split())  # nothing lost, nothing repeated
        for p in passages:
            if p.passage_id.startswith(f"{d}:"):
                assert p.text.endswith(".")  # cut at sentence ends
    assert not [p for p in passages if p.passage_id.startswith("2:")]  # too short for a passage
    one = passages_of(["One two three four five six. Seven eight."], words=5, min_words=4)
    assert [p.text for p in one] == ["One two three four five six. Seven eight."]  # a short tail joins its passage
    sample = sample_passages(passages, 3, seed=1)
    assert len(sample) == 3 and sample == sample_passages(passages, 3, seed=1)
    assert sample_passages(passages, 2, seed=1) == sample[:2]  # a larger n extends a smaller one's choice
    assert len(sample_passages(passages, 100)) == len(passages)


def test_cleaning_and_every_rejection_reason():
    assert clean_query(' Query: "how do cats see at night?"\nPassage: more') == "how do cats see at night?"
    passage = " ".join(DOCS[0].split())
    assert _reason("how do cats sense a gap", passage) is None
    assert _reason("cats", passage) == "too short"
    assert _reason(" ".join(["cats"] * 30), passage) == "too long"
    assert _reason("what is the purpose of this study", passage) == "refers to the passage"
    assert _reason("what is the", passage) == "no content word"
    assert _reason("how do volcanoes erupt", passage) == "shares no word with the passage"
    assert _reason("they hunt at dusk and dawn", passage) == "copies the passage"


def test_a_query_written_for_several_passages_is_dropped_from_all():
    records = [
        {"query": "what are the benefits of tea", "passage": "a", "reason": None},
        {"query": "What are the benefits of tea", "passage": "b", "reason": None},
        {"query": "how is sencha made", "passage": "c", "reason": None},
        {"query": "this study", "passage": "d", "reason": "refers to the passage"},
    ]
    assert kept_pairs(records) == [("how is sencha made", "c")]


def test_round_trip_keeps_a_query_only_where_bm25_finds_its_own_document():
    passages = passages_of(DOCS, words=12, min_words=5)
    first = {d: next(p for p in passages if p.passage_id.startswith(f"{d}:")) for d in ("0", "1")}

    def record(doc, query, reason=None):
        return {"passage_id": first[doc].passage_id, "query": query, "passage": first[doc].text, "reason": reason}

    records = [
        record("0", "how do cats see in dim light"),  # the cat document's words: BM25 ranks it first
        record("1", "do cats purr when they are hurt"),  # written for the tea document, about cats
        record("1", "sencha", reason="too short"),  # already rejected: left as it was
        record("1", "how much caffeine is in green tea"),
    ]
    out = check_round_trip(records, passages, 1)
    assert [r["reason"] for r in out] == [None, "BM25 ranks other documents first", "too short", None]
    assert records[1]["reason"] is None  # the input records are not changed
    assert check_round_trip(records, passages, 0) == records  # depth 0: off
    # a deeper round trip keeps what a shallower one keeps, and its own-document test is by document, not passage
    deep = check_round_trip(records, passages, len(passages))
    assert [r["reason"] for r in deep] == [None, "BM25 ranks other documents first", "too short", None]
    second = next(p for p in passages if p.passage_id.startswith("0:") and p is not first["0"])
    other_passage = {**record("0", "how do cats see in dim light"), "passage_id": second.passage_id}
    assert check_round_trip([other_passage], passages, 1)[0]["reason"] is None


def test_generation_writes_as_it_goes_and_resumes(tmp_path):
    path = tmp_path / "q" / PSEUDO_QUERIES_FILE
    first = FakeGenerator()
    result = generate_pairs(DOCS, path, 2, first, seed=0)
    assert (result.generated, result.new, len(first.seen)) == (2, 2, 2)
    assert len(read_records(path)) == 2
    more = FakeGenerator()
    result = generate_pairs(DOCS, path, 4, lambda: more, seed=0)  # the first two are not asked again
    assert len(more.seen) == result.new == 2 and result.generated == 4
    assert not set(more.seen) & set(first.seen)
    assert {tuple(p) for p in result.pairs} <= {(r["query"], r["passage"]) for r in read_records(path)}
    assert "kept" in result.summary() and result.stats()["written"] == 4

    def never():
        raise AssertionError("nothing is left to write: the generator must not load")

    again = generate_pairs(DOCS, path, 4, never, seed=0)
    assert again.new == 0 and again.pairs == result.pairs
    smaller = generate_pairs(DOCS, path, 1, never, seed=0)  # a smaller n reads its share of the file
    assert smaller.generated == 1

    with path.open("a") as f:
        f.write('{"passage_id": "0:9", "que')  # a run killed while writing its last line
    assert len(read_records(path)) == 4
    torn = tmp_path / "torn.jsonl"
    generate_pairs(DOCS, torn, 1, FakeGenerator())
    with torn.open("a") as f:
        f.write('{"passage_id": "1:0", "qu')
    generate_pairs(DOCS, torn, 3, FakeGenerator())  # the torn line is cut before new records are appended
    assert len(read_records(torn)) == 3
    with pytest.raises(QueryGenerationError, match="written for another corpus"):
        generate_pairs([d.upper() for d in DOCS], torn, 3, FakeGenerator())
    path.write_text('not json\n{"passage_id": "0:0", "query": "q", "passage": "p", "reason": null}\n')
    with pytest.raises(QueryGenerationError, match=r":1: not a pseudo-query record"):
        read_records(path)
    with pytest.raises(QueryGenerationError, match="no passage"):
        generate_pairs(["Too short to ask about."], tmp_path / "none.jsonl", 3, FakeGenerator())


@pytest.fixture(scope="module")
def tiny_lm(bpe_tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_generator_gives_one_line_per_passage_whatever_the_batch(tiny_lm, bpe_tokenizer):
    passages = [" ".join(d.split()) for d in DOCS]
    one = QueryGenerator(tiny_lm, bpe_tokenizer, batch_size=1, max_new_tokens=8).generate(passages)
    three = QueryGenerator(tiny_lm, bpe_tokenizer, batch_size=3, max_new_tokens=8).generate(passages)
    assert len(one) == 3 and all("\n" not in q for q in one)
    assert one == three  # left padding: a passage's query does not depend on its batch
    gen = QueryGenerator(tiny_lm, bpe_tokenizer)
    prompt = gen.prompt("Matcha is ground from shaded leaves.")
    assert prompt.startswith("Passage: ") and prompt.endswith("Passage: Matcha is ground from shaded leaves.\nQuery:")
    cut = gen.prompt(passages[1]).rsplit("Passage: ", 1)[1].removesuffix("\nQuery:")  # a long passage is cut
    assert len(bpe_tokenizer(cut, add_special_tokens=False)["input_ids"]) <= PASSAGE_TOKENS + 1
    assert passages[1].startswith(cut) and len(cut) < len(passages[1])


def test_training_on_pseudo_queries(tiny_model_dir, tmp_path, monkeypatch, caplog):
    from sfp_rag.training.config import TrainConfig
    from sfp_rag.training.data import TrainingDataError
    from sfp_rag.training.trainer import train

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"title": f"About {d.split()[0]}", "text": d}) + "\n" for d in DOCS))
    made = []

    def load(name, device, **kw):
        made.append(name)
        return FakeGenerator()

    monkeypatch.setattr(QueryGenerator, "load", staticmethod(load))
    base = dict(
        data=str(corpus), model=str(tiny_model_dir), objective="two-pass-title", pseudo_queries=3,
        quantization="none", batch_size=2, max_steps=2, warmup_steps=0, save_every=1, device="cpu",
        dtype="float32",
    )  # fmt: skip
    config = TrainConfig(output_dir=str(tmp_path / "run"), **base)
    assert config.generator == str(tiny_model_dir)  # the backbone writes the queries unless told otherwise
    train(config, show_progress=False)
    records = read_records(tmp_path / "run" / PSEUDO_QUERIES_FILE)
    assert len(records) == 3 and made == [str(tiny_model_dir)]
    saved = json.loads((tmp_path / "run" / "sfp_config.json").read_text())
    assert saved["training"]["pseudo_queries"]["kept"] == 3
    assert saved["training"]["texts"] == 2 + 3  # two titled documents (the third is too short) and three pairs

    # a run stopped while generating: the same command starts again from its file (no checkpoint to --resume)
    stopped = tmp_path / "stopped"
    generate_pairs([" ".join(d.split()) for d in DOCS], stopped / PSEUDO_QUERIES_FILE, 2, FakeGenerator())
    with pytest.raises(FileNotFoundError, match="without --resume to start it \\(the pseudo-queries written so far"):
        train(TrainConfig(output_dir=str(stopped), **base), resume=True, show_progress=False)
    later = FakeGenerator()
    monkeypatch.setattr(QueryGenerator, "load", staticmethod(lambda name, device, **kw: later))
    train(TrainConfig(output_dir=str(stopped), **base), show_progress=False)
    assert len(later.seen) == 1 and len(read_records(stopped / PSEUDO_QUERIES_FILE)) == 3

    with pytest.raises(ValueError, match="two-pass-title"):
        TrainConfig(output_dir=str(tmp_path / "x"), **{**base, "objective": "two-pass-crops"})
    with pytest.raises(ValueError, match="needs pseudo_queries"):
        TrainConfig(output_dir=str(tmp_path / "x"), **{**base, "pseudo_queries": 0, "pseudo_query_round_trip": 1})
    # the round trip filters the pairs of the same file, without asking the generator again
    monkeypatch.setattr(QueryGenerator, "load", staticmethod(lambda *a, **kw: pytest.fail("nothing left to write")))
    trip = tmp_path / "trip"
    trip.mkdir()
    records = read_records(stopped / PSEUDO_QUERIES_FILE)
    off_topic = {"0": "how much caffeine is in green tea", "1": "do cats purr when they are hurt"}
    records[0]["query"] = off_topic[records[0]["passage_id"].split(":")[0]]  # its passage's document is the other
    (trip / PSEUDO_QUERIES_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    train(TrainConfig(output_dir=str(trip), **{**base, "pseudo_query_round_trip": 1}), show_progress=False)
    stats = json.loads((trip / "sfp_config.json").read_text())["training"]["pseudo_queries"]
    assert stats["rejected"] == {"BM25 ranks other documents first": 1} and stats["kept"] == 2
    monkeypatch.setattr(QueryGenerator, "load", staticmethod(lambda name, device, **kw: FakeGenerator()))
    monkeypatch.setattr(FakeGenerator, "generate", lambda self, p: ["this study"] * len(p))
    with pytest.raises(TrainingDataError, match="no generated query passed"):
        train(TrainConfig(output_dir=str(tmp_path / "bad"), **base), show_progress=False)


def test_train_cli_reports_the_pseudo_queries(tiny_model_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from sfp_rag.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))  # no titles: crops and queries
    monkeypatch.setattr(QueryGenerator, "load", staticmethod(lambda name, device, **kw: FakeGenerator()))
    base = ["train", "--data", str(corpus), "--model", str(tiny_model_dir), "--steps", "1", "-b", "2",
            "--quantization", "none", "--device", "cpu", "--dtype", "float32", "--pseudo-queries", "4"]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(main, [*base, "--objective", "two-pass-title", "-o", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    assert "pseudo-queries: 4 kept of 4 written (4 now in" in result.output
    result = runner.invoke(main, [*base, "--objective", "two-pass-crops", "-o", str(tmp_path / "no")])
    assert result.exit_code == 1 and "pass --objective two-pass-title" in result.output
