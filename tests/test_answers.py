"""``sfp-rag ask``: extractive answers (cited sentences of the sources) and generated ones (truncation, citations)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sfp_rag.cli import main
from sfp_rag.integrations.extractive import extract_answer, passage_sentences, rank_sentences
from sfp_rag.retrieval.bm25 import BM25Index
from sfp_rag.retrieval.builder import build_index
from sfp_rag.retrieval.searcher import Searcher
from tests.test_pipeline import write_docs

HELP = {
    "help/password.md": "# Resetting your password\n\nOpen the sign-in page and choose forgot password. We email you "
    "a reset link. The link is valid for 30 minutes and can be used once.\n\nAdministrators reset passwords of "
    "company accounts from the admin console.",
    "help/billing.md": "# Plans\n\nThe Plus plan costs 4 euros a month. The Team plan costs 8 euros per person.",
    "pets/dogs.md": "# Dogs\n\nDogs need a walk every day. Puppies chew on shoes and cables.",
}


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    from sfp_rag.embedding.encoder import SFPEncoder

    return SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def searcher(tmp_path_factory, encoder):
    root = tmp_path_factory.mktemp("answers")
    docs = write_docs(root / "docs", HELP)
    build_index(docs, encoder, root / "kb", chunk_size=128, chunk_overlap=8, hybrid=True, show_progress=False)
    return Searcher.open(root / "kb", encoder)


def test_passage_sentences_leave_out_headings_and_fragments():
    text = "# Title line\n\nFirst sentence is here. Second one too.\n## Sub\nOk.\n\nThird sentence, in a new part."
    assert passage_sentences(text) == [
        "First sentence is here.",
        "Second one too.",
        "Third sentence, in a new part.",
    ]


def test_sentences_are_ranked_as_the_index_ranks_chunks(encoder):
    """TM2C2 over the question-to-sentence cosine and a BM25 over the candidate sentences: a brute-force reference."""
    question = "how long is the reset link valid?"
    candidates = [(1, s) for s in passage_sentences(HELP["help/password.md"])] + [(2, "Dogs need a walk every day.")]
    got = rank_sentences(question, candidates, encoder)
    texts = [s for _, s in candidates]
    cos = np.array([encoder.encode_queries(question) @ encoder.encode_documents(t) for t in texts])
    bm25 = np.zeros(len(texts))
    scores, ids = BM25Index.build(texts).search([question], len(texts))
    for sc, i in zip(scores[0], ids[0]):
        if i >= 0:
            bm25[i] = sc
    fused = 0.7 * (cos + 1) / (cos.max() + 1) + 0.3 * bm25 / bm25.max()
    want = [texts[i] for i in np.argsort(-fused, kind="stable")]
    assert [s for _, s, _ in got] == want
    assert [score for *_, score in got] == pytest.approx(sorted(fused, reverse=True), abs=1e-5)
    assert got[0][1] == "The link is valid for 30 minutes and can be used once."  # the words of the question


def test_extractive_answer_quotes_and_cites_its_sources(searcher):
    result = extract_answer("How long is the password reset link valid?", searcher, k=2, sentences=2)
    assert result["mode"] == "extract" and len(result["sentences"]) == 2
    sources = {s["n"]: s for s in result["sources"]}
    for sentence in result["sentences"]:  # every sentence is one of its source's sentences, never invented
        assert sentence["text"] in passage_sentences(sources[sentence["n"]]["text"])
        assert f"{sentence['text']} [{sentence['n']}]" in result["answer"]
    assert all(s["cited"] == any(x["n"] == s["n"] for x in result["sentences"]) for s in result["sources"])
    assert all(s["cosine"] is not None for s in result["sources"])
    with pytest.raises(ValueError, match="at least 1"):
        extract_answer("x", searcher, sentences=0)


def test_ask_cli_is_extractive_by_default(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "home"))
    docs = write_docs(tmp_path / "docs", HELP)
    runner = CliRunner()
    built = runner.invoke(main, ["-q", "index", str(docs), "--model", str(tiny_model_dir), "--chunk-size", "128"])
    assert built.exit_code == 0, built.output
    done = runner.invoke(main, ["ask", "How long is the reset link valid?", "--json", "--sentences", "1"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["mode"] == "extract" and result["answer"].endswith(f"[{result['sentences'][0]['n']}]")
    plain = runner.invoke(main, ["ask", "How long is the reset link valid?"])
    assert plain.exit_code == 0 and "Sources:" in plain.output and "*[" in plain.output
    wrong = runner.invoke(main, ["ask", "x", "--llm", "some-model"])
    assert wrong.exit_code == 2 and "--generate" in wrong.output


def test_a_generated_answer_cut_off_is_marked(searcher, _tiny_model_session, bpe_tokenizer):
    from transformers import LlamaForCausalLM

    from sfp_rag.integrations.answering import LocalLLM, answer_question, stream_answer

    model = LlamaForCausalLM(_tiny_model_session.config)
    model.model.load_state_dict(_tiny_model_session.state_dict())
    llm = LocalLLM(model, bpe_tokenizer, model_name="tiny", max_new_tokens=6)
    result = answer_question("How long is the reset link valid?", searcher, llm, k=2)
    assert result["mode"] == "generate" and result["truncated"] is True  # random weights never stop in 6 tokens
    assert result["cites_nothing"] == (not any(s["cited"] for s in result["sources"]))
    stream, to_sources = stream_answer("How long is the reset link valid?", searcher, llm, k=2)
    text = "".join(stream)
    assert llm.last_truncated is True and len(to_sources(text)) == 2  # the streamed path says it too
