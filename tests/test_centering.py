"""Corpus centering (``retrieval.centering``): the transform against a brute-force reference (eigenvectors of the
covariance, not the SVD the code uses), the pseudo-queries, and the index path that stores and applies it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sfp_rag.embedding.encoder import SFPEncoder
from sfp_rag.retrieval import centering as centering_module
from sfp_rag.retrieval.builder import build_index, text_sources, update_index
from sfp_rag.retrieval.centering import CENTERING_FILE, CenteredRows, Centering, fit_corpus, pseudo_queries
from sfp_rag.retrieval.faiss_index import brute_force_search
from sfp_rag.retrieval.index_folder import Collection, IndexFolderError
from sfp_rag.retrieval.searcher import Searcher
from tests.test_pipeline import tm2c2_reference


def reference_transform(fit_on: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Subtract the mean of ``fit_on``, drop its top-``k`` covariance eigenvectors, renormalise: by hand."""
    fit_on = np.asarray(fit_on, dtype=np.float64)
    mean = fit_on.mean(0)
    values, vectors = np.linalg.eigh(np.cov((fit_on - mean).T, bias=True))
    top = vectors[:, np.argsort(values)[::-1][:k]]  # (d, k)
    out = []
    for row in np.asarray(x, dtype=np.float64):
        c = row - mean
        for j in range(k):
            c = c - (c @ top[:, j]) * top[:, j]
        out.append(c / np.linalg.norm(c))
    return np.array(out)


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)) * np.linspace(3, 0.5, d) + 2.0  # a shared offset and unequal directions
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("k", [0, 1, 5])
def test_transform_equals_a_brute_force_reference(k):
    rng = np.random.default_rng(0)
    docs, pseudo, queries = _unit(rng, 300, 16), _unit(rng, 120, 16) + 0.3, _unit(rng, 7, 16)
    fitted = Centering.fit(docs, pseudo, components=k)
    np.testing.assert_allclose(fitted.documents(docs), reference_transform(docs, docs, k), atol=1e-5)
    np.testing.assert_allclose(fitted.queries(queries), reference_transform(pseudo, queries, k), atol=1e-5)
    assert fitted.components == k
    np.testing.assert_allclose(np.linalg.norm(fitted.queries(queries), axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(fitted.queries(queries[0]), fitted.queries(queries)[0], atol=1e-6)  # one in, one out


def test_save_load_and_a_lazy_view_for_faiss(tmp_path):
    rng = np.random.default_rng(1)
    docs = _unit(rng, 50, 8)
    fitted = Centering.fit(docs, _unit(rng, 40, 8), components=3)
    fitted.save(tmp_path / "c.npz")
    again = Centering.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(again.documents(docs), fitted.documents(docs))
    view = CenteredRows(docs, fitted.documents)
    assert view.shape == docs.shape and len(view) == 50
    np.testing.assert_array_equal(view[10:20], fitted.documents(docs[10:20]))
    np.testing.assert_array_equal(view[[3, 1]], fitted.documents(docs[[3, 1]]))
    np.testing.assert_array_equal(np.asarray(view), fitted.documents(docs))
    with pytest.raises(ValueError, match="more than 3 rows"):
        Centering.fit(docs[:3], docs, components=3)
    with pytest.raises(ValueError, match="query_mean must have shape"):
        Centering(docs[0], docs[:2], docs[0, :4], docs[:2])


def test_pseudo_queries_are_word_spans_of_sentences():
    texts = [
        "Short one. The quick brown fox jumps over the lazy dog near the old river bank today!",
        "Heart disease risk rises with age. Statins lower cholesterol in most adults who take them daily.",
        "tiny",
    ]
    spans = pseudo_queries(texts, n=40, seed=3)
    assert len(spans) == 40 and spans == pseudo_queries(texts, n=40, seed=3)
    for span in spans:
        words = span.split()
        assert 4 <= len(words) <= 12 and any(span in t for t in texts), span  # a run of words of one text
        assert not any(w[-1] in ".!?" for w in words[:-1]), span  # that does not cross a sentence end
    assert "Short one." not in " | ".join(spans)  # a 2-word sentence gives no span
    assert pseudo_queries(["a b c", "one two"], n=5) == []  # nothing long enough: none, and no endless loop
    assert pseudo_queries(texts, n=40, seed=4) != spans


def test_fit_corpus_skips_small_corpora():
    rng = np.random.default_rng(2)
    texts = [f"document {i} talks about topic number {i} at some length here" for i in range(50)]
    calls = []

    def embed(spans):
        calls.append(len(spans))
        return _unit(rng, len(spans), 8)

    assert fit_corpus(texts, _unit(rng, 50, 8), embed) is None and not calls  # under MIN_CHUNKS
    fitted = fit_corpus(texts * 5, _unit(rng, 250, 8), embed, n_queries=100)
    assert fitted is not None and calls == [100] and fitted.components == 5


# --- the index path ---------------------------------------------------------------------------------------------

TOPICS = {
    "cats": "Cats sleep for most of the day and purr when they are content with their owners",
    "tea": "Green tea is steamed soon after picking while black tea is oxidised for hours",
    "banks": "The central bank raised interest rates again and stock markets fell sharply that week",
    "hearts": "Regular exercise lowers blood pressure and the risk of heart disease in older adults",
    "trains": "The night train crosses the mountains slowly and reaches the coast early in the morning",
}
WORDS = "river stone light paper green window quiet market summer garden letter winter engine silver".split()


def corpus(n: int) -> tuple[list[str], list[str]]:
    """``n`` notes on five topics, each with its own words (a chunk holding only a topic sentence can still tie)."""
    rng = np.random.default_rng(7)
    names = list(TOPICS)
    texts = [
        f"{TOPICS[names[i % 5]]}. Note {i} adds {' '.join(rng.choice(WORDS, 6))} about {names[i % 5]}."
        for i in range(n)
    ]
    return texts, [f"note-{i}" for i in range(n)]


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture
def small_min(monkeypatch):
    monkeypatch.setattr(centering_module, "MIN_CHUNKS", 20)


def _build(encoder, out, texts, ids, **kw):
    return update_index(out, encoder, add=text_sources(texts, ids), chunk_size=64, chunk_overlap=8,
                        show_progress=False, **kw)  # fmt: skip


def test_dense_search_on_a_centered_index_equals_brute_force(tmp_path, encoder, small_min):
    texts, ids = corpus(40)
    out = tmp_path / "kb"
    _build(encoder, out, texts, ids, hybrid=False)
    coll = Collection.open(out)
    assert coll.manifest["centering"] == {"enabled": True, "fitted": {"chunks": coll.ntotal, "components": 5}}
    assert (out / CENTERING_FILE).exists()
    raw = np.asarray(coll.vectors(), dtype=np.float64)
    pseudo = encoder.encode_queries(pseudo_queries(coll.texts()))
    queries = ["why do cats purr", "interest rates and markets", "tea leaves after picking", "heart risk"]
    qvecs = encoder.encode_queries(queries)
    ref_docs = reference_transform(raw, raw, 5)
    ref_queries = reference_transform(pseudo, qvecs, 5)
    ref_scores, ref_ids = brute_force_search(ref_docs.astype(np.float32), ref_queries.astype(np.float32), 5)
    hits = Searcher(coll, encoder).search(queries, k=5, mode="dense")
    for got, scores, query in zip(hits, ref_scores, ref_queries):
        # the top-5 scores, and each row returned really has its score (chunks with the same text tie)
        assert [h.score for h in got] == pytest.approx(scores.tolist(), abs=1e-4)
        assert [h.score for h in got] == pytest.approx((ref_docs[[h.row for h in got]] @ query).tolist(), abs=1e-4)
        assert len({h.row for h in got}) == 5
    # the rows the hybrid lookup scores are the vectors FAISS holds
    rows = [0, 7, 13]
    held = np.stack([coll.faiss.index.reconstruct(r) for r in rows])
    np.testing.assert_allclose(coll.searched_vectors(rows), held, atol=1e-6)
    np.testing.assert_allclose(held, ref_docs[rows], atol=1e-5)


def test_hybrid_lookups_use_the_centered_space(tmp_path, encoder, small_min):
    from sfp_rag.retrieval.fusion import hybrid_search

    texts, ids = corpus(40)
    out = tmp_path / "kb"
    _build(encoder, out, texts, ids, hybrid=True)
    searcher = Searcher(Collection.open(out), encoder)
    coll = searcher.collection
    raw = np.asarray(coll.vectors(), dtype=np.float64)
    pseudo = encoder.encode_queries(pseudo_queries(coll.texts()))
    queries = ["cats purr in note 3", "central bank note 12", "night train coast"]
    vectors = encoder.encode_queries(queries)
    centered_docs = reference_transform(raw, raw, 5)
    centered_queries = reference_transform(pseudo, vectors, 5)
    alpha, depth = 0.6, 3
    hits = hybrid_search(searcher, queries, k=3, mode="hybrid", depth=depth, alpha=alpha, vectors=vectors)
    bm25_scores, bm25_ids = coll.bm25.search(queries, depth)
    looked_up = 0
    for vec, got, bs, bi in zip(centered_queries, hits, bm25_scores, bm25_ids):
        ref, only_bm25 = tm2c2_reference(centered_docs @ vec, bs, bi, alpha, depth)
        looked_up += only_bm25
        assert [h.score for h in got] == pytest.approx(sorted(ref.values(), reverse=True)[:3], abs=1e-4)
    assert looked_up > 0


def test_updates_reuse_the_centering_until_the_corpus_changes_by_a_tenth(tmp_path, encoder, small_min):
    texts, ids = corpus(60)
    out = tmp_path / "kb"
    _build(encoder, out, texts[:50], ids[:50], hybrid=False)
    first = (out / CENTERING_FILE).read_bytes()
    fitted = Collection.open(out).manifest["centering"]["fitted"]
    _build(encoder, out, texts[50:52], ids[50:52])  # +4%: kept
    assert (out / CENTERING_FILE).read_bytes() == first
    assert Collection.open(out).manifest["centering"]["fitted"] == fitted
    _build(encoder, out, texts[52:], ids[52:])  # 60 against 50 fitted: refitted
    coll = Collection.open(out)
    assert coll.manifest["centering"]["fitted"]["chunks"] == coll.ntotal > fitted["chunks"] * 1.1
    assert (out / CENTERING_FILE).read_bytes() != first


def test_no_centering_and_indexes_from_before_it(tmp_path, encoder, small_min):
    texts, ids = corpus(40)
    out = tmp_path / "plain"
    _build(encoder, out, texts, ids, hybrid=False, centering=False)
    coll = Collection.open(out)
    assert coll.manifest["centering"] == {"enabled": False, "fitted": None} and coll.centering is None
    assert not (out / CENTERING_FILE).exists()
    q = encoder.encode_queries(["cats purr"])
    ref_scores, _ = brute_force_search(np.asarray(coll.vectors()), q, 3)
    assert [h.score for h in coll.search_vectors(q, 3)[0]] == pytest.approx(ref_scores[0].tolist(), abs=1e-5)
    update_index(out, encoder, add=text_sources(["Trains cross the mountains at night."], ["extra"]))
    assert Collection.open(out).manifest["centering"]["enabled"] is False  # an update keeps the index's choice
    # an index written before centering existed has no such section: updates leave it uncentered
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["centering"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    update_index(out, encoder, add=text_sources(["Tea is picked in spring."], ["extra2"]))
    assert Collection.open(out).centering is None


def test_a_missing_or_damaged_centering_file_is_reported(tmp_path, encoder, small_min):
    texts, ids = corpus(40)
    out = tmp_path / "kb"
    _build(encoder, out, texts, ids, hybrid=False)
    for damage in ("garbage", "missing"):
        if damage == "garbage":
            (out / CENTERING_FILE).write_bytes(b"PK\x03\x04 not really a zip file")
        else:
            (out / CENTERING_FILE).unlink()
        with pytest.raises(IndexFolderError, match="centering.npz is missing or damaged.*rebuild"):
            Collection.open(out).search_vectors(encoder.encode_queries(["cats"]), 2)


def test_build_index_from_a_folder_is_centered_by_default(tmp_path, encoder, small_min):
    docs = tmp_path / "docs"
    docs.mkdir()
    for text, name in zip(*corpus(30)):
        (docs / f"{name}.txt").write_text(text)
    build_index(docs, encoder, tmp_path / "kb", chunk_size=64, chunk_overlap=8, hybrid=False, show_progress=False)
    assert Collection.open(tmp_path / "kb").centering is not None
