from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sfp_rag.evaluation.beir import BeirDataError, dense_run, evaluate_beir, fuse, load_beir, score_run
from sfp_rag.evaluation.space import alignment, evaluate_space, uniformity

CORPUS = {
    "d1": ("Cats", "Cats sleep most of the day and purr when content."),
    "d2": ("Dogs", "Dogs need a walk every day. " * 30),  # long: several chunks
    "d3": ("Markets", "Stock markets fell after the central bank raised rates."),
    "d4": ("", "Green tea is steamed soon after picking."),
}
QUERIES = {"q1": "why do cats purr", "q2": "walking a dog", "q3": "interest rates and stocks", "q9": "unjudged"}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 2, "d1": 1}, "q3": {"d3": 1}}


def make_beir(root: Path, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"_id": k, "title": t, "text": x}) for k, (t, x) in CORPUS.items()]
    if gz:
        with gzip.open(root / "corpus.jsonl.gz", "wt") as f:
            f.write("\n".join(lines) + "\n")
    else:
        (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, v in QUERIES.items()))
    (root / "qrels").mkdir(exist_ok=True)
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, ds in QRELS.items() for d, s in ds.items()]
    (root / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return root


# --- reader -----------------------------------------------------------------------------------------------------


def test_reader_keeps_judged_queries(tmp_path):
    data = load_beir(make_beir(tmp_path / "b"))
    assert set(data.queries) == {"q1", "q2", "q3"} and len(data.corpus) == 4
    assert data.doc_text("d1") == "Cats\n\nCats sleep most of the day and purr when content."
    assert data.doc_text("d4") == "Green tea is steamed soon after picking."  # no title: text alone
    assert load_beir(make_beir(tmp_path / "plain", gz=False)).qrels == QRELS


def test_reader_rejects_malformed_lines_with_file_and_line(tmp_path):
    root = make_beir(tmp_path / "b", gz=False)
    text = (root / "corpus.jsonl").read_text().splitlines()
    (root / "corpus.jsonl").write_text("\n".join([text[0], "{broken", *text[1:]]))
    with pytest.raises(BeirDataError, match=r"corpus.jsonl:2: not valid JSON"):
        load_beir(root)
    root = make_beir(tmp_path / "c")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(BeirDataError, match=r"test.tsv:2: expected"):
        load_beir(root)
    (root / "qrels" / "test.tsv").write_text("q1\td1\thigh\n")
    with pytest.raises(BeirDataError, match=r"test.tsv:1: score 'high'"):
        load_beir(root)
    (root / "qrels" / "test.tsv").write_text("q1\tnope\t1\n")
    with pytest.raises(BeirDataError, match="corpus-id 'nope'"):
        load_beir(root)
    with pytest.raises(BeirDataError, match="dev.tsv is missing"):
        load_beir(root, split="dev")
    with pytest.raises(BeirDataError, match="does not exist"):
        load_beir(tmp_path / "none")


# --- metrics and fusion -------------------------------------------------------------------------------------------


def test_metrics_equal_hand_computed_values():
    qrels = {"a": {"d1": 1, "d2": 2}, "b": {"d3": 1}}
    run = {"a": {"d1": 0.9, "d3": 0.8, "d2": 0.7}, "b": {"d4": 0.9, "d5": 0.8, "d3": 0.1}}
    s = score_run(qrels, run)
    ndcg_a = (1 + 2 / math.log2(4)) / (2 + 1 / math.log2(3))  # linear gains, as trec_eval
    ndcg_b = (1 / math.log2(4)) / 1
    assert s["nDCG@10"] == pytest.approx(100 * (ndcg_a + ndcg_b) / 2)
    assert s["Recall@100"] == pytest.approx(100.0)
    ap_a = (1 / 1 + 2 / 3) / 2
    ap_b = 1 / 3
    assert s["MAP@100"] == pytest.approx(100 * (ap_a + ap_b) / 2)
    assert s["MRR@10"] == pytest.approx(100 * (1 / 1 + 1 / 3) / 2)
    # a query without results counts as zero, not as missing
    assert score_run(qrels, {"a": run["a"]})["Recall@100"] == pytest.approx(50.0)


def test_mrr_is_cut_at_10():
    qrels = {"a": {"rel": 1}}
    run = {"a": {**{f"x{i}": 1 - i / 100 for i in range(10)}, "rel": 0.5}}
    assert score_run(qrels, run)["MRR@10"] == 0.0


def test_fusion_equals_reference_rrf():
    a = {"q": {"d1": 0.9, "d2": 0.5, "d3": 0.1}}
    b = {"q": {"d3": 12.0, "d4": 3.0}}
    fused = fuse(a, b, fusion="rrf")["q"]
    ref = {"d1": 1 / 61, "d2": 1 / 62, "d3": 1 / 63 + 1 / 61, "d4": 1 / 62}
    assert fused == pytest.approx(ref)
    assert list(fused)[0] == "d3"


def test_fusion_minmax_matches_the_index_path():
    a = {"q": {"d1": 0.9, "d2": 0.5, "d3": 0.1}}
    b = {"q": {"d3": 12.0, "d4": 3.0}}
    fused = fuse(a, b, fusion="minmax", alpha=0.25)["q"]  # dense scaled: d1 1, d2 0.5, d3 0; bm25: d3 1, d4 0
    assert fused == pytest.approx({"d1": 0.25, "d2": 0.125, "d3": 0.75, "d4": 0.0})
    assert list(fused) == ["d3", "d1", "d2", "d4"]


def test_fusion_convex_is_the_default_and_looks_up_the_cosines_past_the_depth():
    # d4 is BM25's candidate only: its cosine (0.3) comes after the dense run's first `depth` documents
    a = {"q": {"d1": 0.9, "d2": 0.5, "d3": 0.1, "d4": 0.3}}
    b = {"q": {"d3": 12.0, "d4": 3.0}}
    fused = fuse(a, b, depth=3, alpha=0.5)["q"]
    ref = {d: 0.5 * (c + 1) / 1.9 + 0.5 * b["q"].get(d, 0.0) / 12.0 for d, c in a["q"].items()}
    top3 = sorted(ref, key=lambda d: -ref[d])[:3]  # the fused run is cut at the depth too
    assert list(fused) == top3 and fused == pytest.approx({d: ref[d] for d in top3})
    assert "d4" in fused  # d4 (cosine 0.3, BM25 3) beats d2 (cosine 0.5, no BM25)
    # without the lookup d4 would get the lowest cosine of the candidates (0.1)
    short = fuse({"q": {"d1": 0.9, "d2": 0.5, "d3": 0.1}}, b, depth=3, alpha=0.5)["q"]
    assert short["d4"] == pytest.approx(0.5 * 1.1 / 1.9 + 0.5 * 3 / 12)


# --- dense runs through the index path -------------------------------------------------------------------------


def chunks_of(encoder, data, size: int) -> tuple[list[str], list[str]]:
    """Each chunk's document and text, chunked by hand as the index does (no overlap)."""
    from sfp_rag.retrieval.chunking import chunk_text, make_splitter

    splitter = make_splitter(lambda s: encoder.tokenizer.encode(s, add_special_tokens=False), size, 0)
    owners, texts = [], []
    for d in data.corpus:
        for c in chunk_text(splitter, d, data.doc_text(d)):
            owners.append(d)
            texts.append(c.text)
    return owners, texts


def test_document_score_is_its_best_chunk(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    data = load_beir(make_beir(tmp_path / "b"))
    run, stats = dense_run(tiny_encoder, data, chunk_size=32, chunk_overlap=0, depth=10, show_progress=False)
    assert stats["chunks"] > len(CORPUS)  # d2 was split
    owners, texts = chunks_of(tiny_encoder, data, 32)
    chunk_vecs = tiny_encoder.encode(texts)
    for q, qtext in data.queries.items():
        sims = chunk_vecs @ tiny_encoder.encode(qtext)
        best = {d: max(float(s) for s, o in zip(sims, owners) if o == d) for d in data.corpus}
        assert run[q] == pytest.approx(best, abs=1e-4)
        assert list(run[q]) == sorted(best, key=lambda d: -best[d])
    # `also`: past its top `depth`, the run scores the documents asked for exactly (BM25's candidates for fusion)
    also = {q: ["nope"] + list(data.corpus)[::-1] for q in data.queries}
    deep, _ = dense_run(tiny_encoder, data, chunk_size=32, chunk_overlap=0, depth=2, also=also, show_progress=False)
    for q in data.queries:
        assert list(deep[q])[:2] == list(run[q])[:2] and deep[q] == pytest.approx(run[q], abs=1e-4)


def test_a_centered_run_equals_a_brute_force_reference(tmp_path, tiny_encoder, monkeypatch):
    """``centering=True`` scores as the index does: both sides centered on the corpus (chunks and pseudo-queries)."""
    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    from sfp_rag.retrieval import centering
    from tests.test_centering import reference_transform

    monkeypatch.setattr(centering, "MIN_CHUNKS", 5)
    data = load_beir(make_beir(tmp_path / "b"))
    run, stats = dense_run(tiny_encoder, data, chunk_size=16, chunk_overlap=0, depth=10, show_progress=False,
                           centering=True, components=2)  # fmt: skip
    assert stats["centering"] == {"components": 2}
    owners, texts = chunks_of(tiny_encoder, data, 16)
    chunk_vecs = tiny_encoder.encode(texts)
    pseudo = tiny_encoder.encode_queries(centering.pseudo_queries(texts))
    docs = reference_transform(chunk_vecs, chunk_vecs, 2)
    for q, qtext in data.queries.items():
        sims = docs @ reference_transform(pseudo, tiny_encoder.encode_queries([qtext]), 2)[0]
        best = {d: max(float(s) for s, o in zip(sims, owners) if o == d) for d in data.corpus}
        assert run[q] == pytest.approx(best, abs=1e-4)
    plain, _ = dense_run(tiny_encoder, data, chunk_size=16, chunk_overlap=0, depth=10, show_progress=False)
    assert plain["q1"] != pytest.approx(run["q1"], abs=1e-3)  # centering changed the scores


def count_document_encodes(monkeypatch) -> list[int]:
    """A list that grows by the number of texts of every ``SFPEncoder.encode_documents`` call from now on."""
    from sfp_rag.embedding.encoder import SFPEncoder

    calls: list[int] = []
    real = SFPEncoder.encode_documents

    def counting(self, texts, **kw):
        calls.append(len(texts))
        return real(self, texts, **kw)

    monkeypatch.setattr(SFPEncoder, "encode_documents", counting)
    return calls


def test_embeddings_are_cached_and_the_cache_follows_the_encoder(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    from sfp_rag.embedding.encoder import SFPEncoder

    data = load_beir(make_beir(tmp_path / "b"))
    calls = count_document_encodes(monkeypatch)
    first, _ = dense_run(tiny_encoder, data, chunk_size=64, show_progress=False)
    n = sum(calls)
    assert n > 0
    again, _ = dense_run(tiny_encoder, data, chunk_size=64, show_progress=False)
    assert sum(calls) == n and again == first  # nothing re-embedded
    other = SFPEncoder(tiny_encoder.model, tiny_encoder.tokenizer, tiny_encoder.config.replace(template="eol"))
    dense_run(other, data, chunk_size=64, show_progress=False)
    assert sum(calls) == 2 * n  # another encoder: its own vectors


def test_a_truncated_encoder_scores_from_the_full_width_cache_as_if_embedded_at_its_width(
    tmp_path, tiny_encoder, monkeypatch
):
    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    from sfp_rag.embedding.encoder import SFPEncoder

    data = load_beir(make_beir(tmp_path / "b"))
    calls = count_document_encodes(monkeypatch)
    dense_run(tiny_encoder, data, chunk_size=16, chunk_overlap=0, show_progress=False)
    n = sum(calls)
    short = SFPEncoder(tiny_encoder.model, tiny_encoder.tokenizer, tiny_encoder.config.replace(truncate_dim=8))
    run, _ = dense_run(short, data, chunk_size=16, chunk_overlap=0, depth=10, show_progress=False)
    assert sum(calls) == n  # the full-width vectors were reused, not embedded again
    owners, texts = chunks_of(short, data, 16)
    chunk_vecs = short.encode(texts)  # embedded at width 8 directly: the reference
    assert chunk_vecs.shape[1] == 8
    for q, qtext in data.queries.items():
        sims = chunk_vecs @ short.encode_queries(qtext)
        best = {d: max(float(s) for s, o in zip(sims, owners) if o == d) for d in data.corpus}
        assert run[q] == pytest.approx(best, abs=1e-4)


def test_evaluate_beir_with_bm25_and_hybrid(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    result = evaluate_beir(
        make_beir(tmp_path / "b"), {"tiny": tiny_encoder, "BM25": "bm25"}, hybrid=["tiny"], chunk_size=64
    )
    assert set(result["scores"]) == {"tiny", "BM25", "tiny+bm25"}
    assert result["scores"]["BM25"]["MRR@10"] > 60  # lexical overlap makes these queries easy for BM25
    assert result["kind"] == "beir" and result["queries"] == 3
    from sfp_rag.retrieval.fusion import DEFAULT_ALPHA

    assert result["fusion"] == {"method": "convex", "alpha": DEFAULT_ALPHA}  # the weight used, not "default"
    assert list(result["scores"]) == ["tiny", "BM25", "tiny+bm25"]  # systems in the order given, then hybrids
    rrf = evaluate_beir(
        make_beir(tmp_path / "b"), {"tiny": tiny_encoder}, hybrid=["tiny"], chunk_size=64, fusion="rrf"
    )
    assert list(rrf["scores"]) == ["tiny", "BM25", "tiny+bm25"] and rrf["fusion"] == {"method": "rrf", "alpha": None}
    assert rrf["scores"]["tiny"] == result["scores"]["tiny"]  # the looked-up cosines never change the dense run


# --- semantic space -----------------------------------------------------------------------------------------------


def test_alignment_and_uniformity_equal_loops():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.standard_normal((7, 4))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    assert alignment(x, y) == pytest.approx(np.mean([np.sum((a - b) ** 2) for a, b in zip(x, y)]))
    pairs = [np.exp(-2 * np.sum((x[i] - x[j]) ** 2)) for i in range(7) for j in range(i + 1, 7)]
    assert uniformity(x) == pytest.approx(np.log(np.mean(pairs)))


def test_evaluate_space_on_synthetic_stsb(tmp_path, tiny_encoder):
    from tests.test_sts import make_senteval

    make_senteval(tmp_path / "se")
    result = evaluate_space(tiny_encoder, tmp_path / "se", split="dev")
    assert result["positive_pairs"] == 1 and result["sentences"] == 8  # only gold 4.5 is above 4
    assert result["ratio"] == pytest.approx(-result["uniformity"] / result["alignment"])
    with pytest.raises(ValueError, match="split"):
        evaluate_space(tiny_encoder, tmp_path / "se", split="train")


# --- report -----------------------------------------------------------------------------------------------------


def test_report_builds_markdown_and_plots(tmp_path):
    from sfp_rag.evaluation.report import build_report

    res = tmp_path / "results"
    res.mkdir()
    scores = {"STS12": 60.0, "STSBenchmark": 70.0, "avg": 65.0}
    (res / "a.json").write_text(json.dumps({"kind": "sts", "label": "zero-shot", "scores": scores}))
    (res / "b.json").write_text(json.dumps({"kind": "sts", "label": "trained", "scores": scores}))
    beir = {
        "kind": "beir",
        "dataset": "scifact",
        "split": "test",
        "queries": 3,
        "documents": 4,
        "scores": {"BM25": {"nDCG@10": 1, "Recall@100": 2, "MAP@100": 3, "MRR@10": 4}},
    }
    (res / "c.json").write_text(json.dumps(beir))
    beir["scores"] = {"sfp": {"nDCG@10": 5, "Recall@100": 6, "MAP@100": 7, "MRR@10": 8}}
    (res / "c2.json").write_text(json.dumps(beir))
    beir["scores"] = {  # the same system run again: another score is kept beside the first, the same one once
        "sfp": {"nDCG@10": 5.5, "Recall@100": 6, "MAP@100": 7, "MRR@10": 8},
        "BM25": {"nDCG@10": 1, "Recall@100": 2, "MAP@100": 3, "MRR@10": 4},
    }
    (res / "c3.json").write_text(json.dumps(beir))
    (res / "d.json").write_text(
        json.dumps(
            {"kind": "space", "label": "m", "split": "dev", "alignment": 0.3, "uniformity": -2.0, "ratio": 6.67}
        )
    )
    (res / "other.json").write_text(json.dumps({"not": "ours"}))
    dev = {"STSBenchmark-dev": 79.5, "SICKRelatedness-dev": 73.0, "avg": 76.25}  # tuning data: its own table
    (res / "e.json").write_text(json.dumps({"kind": "sts", "label": "candidate", "scores": dev}))
    (res / "train_log_crops.jsonl").write_text(
        json.dumps({"step": 1, "loss": 0.5, "examples_per_s": 2.0})
    )  # a log named for its run
    (res / "train_config_crops.json").write_text(json.dumps({"training": {"objective": "two-pass-crops"}}))
    log = tmp_path / "run1" / "train_log.jsonl"
    log.parent.mkdir()
    records = [{"step": s, "loss": 2 / s, "examples_per_s": 3.0} for s in (1, 2, 3)] + [{"step": 3, "stsb_dev": 71.5}]
    log.write_text("\n".join(json.dumps(r) for r in records))
    md = build_report([res, log], tmp_path / "report").read_text()
    for needle in (
        "## STS",
        "zero-shot",
        "## BEIR",
        "scifact",
        "## Semantic space",
        "## Training",
        "run1",
        "71.50 (3)",
        "| crops | two-pass-crops |",
    ):
        assert needle in md
    beir_table = md.split("## BEIR")[1].split("## Semantic space")[0]
    assert "| sfp | 5.00 |" in beir_table and "| sfp [c3] | 5.50 |" in beir_table
    assert beir_table.count("| BM25 |") == 1 and "BM25 [c3]" not in beir_table
    test_table, dev_table = md.split("## BEIR")[0].split("### Tuning data (dev splits)")
    assert "| STS12 | STS-B | Avg. |" in test_table and "candidate" not in test_table
    assert "| candidate | 79.50 | 73.00 | 76.25 |" in dev_table and "zero-shot" not in dev_table
    for png in ("sts.png", "alignment_uniformity.png", "loss.png", "beir.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
    with pytest.raises(ValueError, match=r"other.json is not a result file \(kind None\)"):
        build_report([res / "other.json"], tmp_path / "empty")  # named directly: an error, not a silent skip
    (tmp_path / "only-other").mkdir()
    (tmp_path / "only-other" / "x.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="no result files"):
        build_report([tmp_path / "only-other"], tmp_path / "empty")  # found in a folder: skipped


def test_template_tool_ranks_templates_on_both_sides(tmp_path, tiny_encoder, monkeypatch):
    from sfp_rag.evaluation.templates import evaluate_templates, format_template_table
    from tests.test_sts import make_senteval

    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    make_senteval(tmp_path / "senteval")
    senteval = tmp_path / "senteval"
    beir = make_beir(tmp_path / "b")
    result = evaluate_templates(
        tiny_encoder, ["eol-sum", "eol", 'Query : "{text}" is about'], sts_data=senteval, beir_data=beir,
        split="test", chunk_size=64,
    )  # fmt: skip
    rows = result["rows"]
    assert {r["template"] for r in rows} == {"eol-sum", "eol", 'Query : "{text}" is about'}
    assert all({"stsb_dev", "ndcg10", "recall100"} <= set(r) for r in rows)
    assert [r["ndcg10"] for r in rows] == sorted((r["ndcg10"] for r in rows), reverse=True)
    # the query side with the encoder's own template is exactly the plain BEIR run (documents embedded once)
    own = next(r for r in rows if r["template"] == "eol-sum")
    plain = evaluate_beir(beir, {"tiny": tiny_encoder}, split="test", chunk_size=64)["scores"]["tiny"]
    assert own["ndcg10"] == pytest.approx(plain["nDCG@10"], abs=0.01)
    assert "| 1 |" in format_template_table(result)
    with pytest.raises(ValueError, match="preset"):
        evaluate_templates(tiny_encoder, ["no-such-preset"], sts_data=senteval)


def test_cheap_tuning_runs_first_chunks_and_a_query_subset(tmp_path, tiny_encoder, monkeypatch):
    from sfp_rag.evaluation.beir import subset_queries

    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    data = load_beir(make_beir(tmp_path / "b"))
    full, full_stats = dense_run(tiny_encoder, data, chunk_size=16, chunk_overlap=0, show_progress=False)
    first, first_stats = dense_run(tiny_encoder, data, chunk_size=16, chunk_overlap=0, show_progress=False,
                                   max_chunks=1)  # fmt: skip
    assert first_stats["chunks"] == len(data.corpus) < full_stats["chunks"]  # one chunk a document
    assert set(first) == set(full)
    small = subset_queries(load_beir(make_beir(tmp_path / "c")), 2)
    assert list(small.queries) == sorted(data.queries)[:2] and set(small.qrels) <= set(small.queries)
    result = evaluate_beir(make_beir(tmp_path / "d"), {"tiny": tiny_encoder}, chunk_size=16, chunk_overlap=0,
                           max_chunks=1, max_queries=2)  # fmt: skip
    assert result["queries"] == 2 and result["chunking"]["max_chunks"] == 1 and result["max_queries"] == 2
