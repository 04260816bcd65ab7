"""The Python ``Index`` object: the CLI's verbs (build, search, add, update, delete, info) as methods."""

from __future__ import annotations

import numpy as np
import pytest

import sfp_rag
from sfp_rag import Index
from sfp_rag.retrieval.index import delete_index, list_indexes
from sfp_rag.retrieval.index_folder import IndexFolderError
from tests.test_pipeline import write_docs


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    from sfp_rag.embedding.encoder import SFPEncoder

    return SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "indexes"))
    return tmp_path / "indexes"


OPTS = {"chunk_size": 64, "chunk_overlap": 8, "show_progress": False}


def test_create_open_search_by_name(tmp_path, home, encoder):
    docs = write_docs(tmp_path / "docs")
    index = Index.create("kb", docs=docs, encoder=encoder, hybrid=True, **OPTS)
    assert index.path == home / "kb" and len(index) >= 5
    again = Index.open("kb", encoder=encoder)
    one = again.search("Dogs need a walk every day.", k=2, mode="dense")
    assert one[0].source == "pets/dogs.md" and one[0].metadata == {}
    batch = again.search(["Dogs need a walk every day.", "central bank interest rates"], k=1)
    assert [hits[0].source for hits in batch] == ["pets/dogs.md", "finance/markets.txt"]
    # the batch equals one query at a time, and the default mode of an index with BM25 is hybrid
    assert [h.row for h in again.search("central bank interest rates", k=3)] == [
        h.row for h in again.search(["central bank interest rates"], k=3, mode="hybrid")[0]
    ]
    # sfp_rag.search takes a mode (it used to raise TypeError)
    hits = sfp_rag.search("Dogs need a walk every day.", index="kb", k=1, mode="bm25")
    assert hits[0].source == "pets/dogs.md"


def test_bm25_search_never_loads_the_model(tmp_path, home, encoder, monkeypatch):
    docs = write_docs(tmp_path / "docs")
    Index.create("kb", docs=docs, encoder=encoder, hybrid=True, **OPTS)
    import sfp_rag.retrieval.searcher as searcher

    def boom(*a, **k):
        raise AssertionError("the encoder was loaded for a BM25 search")

    monkeypatch.setattr(searcher, "_recorded_encoder", boom)
    monkeypatch.setattr(searcher, "_quick_encoder", boom)  # neither the full encoder nor the torch-free one
    assert Index.open("kb").search("walk every day", mode="bm25")[0].source == "pets/dogs.md"
    with pytest.raises(AssertionError, match="loaded"):
        Index.open("kb").search("walk every day", mode="dense")


def test_add_texts_with_metadata_then_update_and_delete(tmp_path, home, encoder):
    docs = write_docs(tmp_path / "docs")
    index = Index.create("kb", docs=docs, encoder=encoder, **OPTS)
    before = index.collection.vectors().copy()
    report = index.add(
        ["Our office is closed on Fridays.", "The canteen serves soup at noon."],
        ids=["memo-1", "memo-2"],
        metadata=[{"kind": "memo", "year": 2026}, None],
    )
    assert report.added == ["memo-1", "memo-2"] and report.embedded == 2 and report.reused == len(before)
    hit = index.search("Our office is closed on Fridays.", k=1, mode="dense")[0]
    assert hit.source == "memo-1" and hit.metadata == {"kind": "memo", "year": 2026}
    assert hit.to_dict()["metadata"] == {"kind": "memo", "year": 2026}
    # stored vectors of the old files are untouched; new rows are the encoder's vectors of the new texts
    vectors = index.collection.vectors()
    np.testing.assert_array_equal(vectors[: len(before)], before)
    np.testing.assert_allclose(vectors[-2:], encoder.encode_documents(index.collection.texts()[-2:]), atol=1e-5)
    # adding the same id with new text replaces it in place
    index.add(["Our office is open on Fridays."], ids=["memo-1"])
    assert sum(1 for t in index.collection.texts() if "office" in t) == 1
    # delete by source, with a clear error for an unknown one
    report = index.delete(["memo-1", "pets/cats.txt"])
    assert sorted(report.removed) == ["memo-1", "pets/cats.txt"]
    assert "memo-1" not in index.info()["sources"] and "memo-2" in index.info()["sources"]
    with pytest.raises(KeyError, match="nope"):
        index.delete("nope")
    # update() syncs with the folder: the folder's files only
    report = index.update(docs, **OPTS)
    assert "memo-2" in report.removed and "pets/cats.txt" in report.added
    assert index.info()["documents"] == 5


def test_create_from_texts_and_info(tmp_path, encoder):
    index = Index.create(tmp_path / "t", texts=["alpha beta", "gamma delta"], encoder=encoder, **OPTS)
    info = index.info()
    assert info["documents"] == 2 and info["chunks"] == 2 and info["docs_dir"] is None and info["bytes"] > 0
    assert info["sources"][0].startswith("text:")
    with pytest.raises(ValueError, match="either"):
        Index.create(tmp_path / "u", encoder=encoder)
    with pytest.raises(ValueError, match="empty"):
        index.search(" ")
    with pytest.raises(ValueError, match="mode must be one of"):
        index.search("x", mode="fuzzy")


def test_add_files_and_bad_input(tmp_path, encoder):
    index = Index.create(tmp_path / "t", texts=["alpha beta"], encoder=encoder, **OPTS)
    f = tmp_path / "note.md"
    f.write_text("A note about gardening and tomatoes.")
    index.add(files=[f], metadata=[{"tag": "garden"}])
    hit = index.search("gardening and tomatoes", k=1, mode="dense")[0]
    assert hit.source == str(f.resolve()) and hit.metadata == {"tag": "garden"}
    with pytest.raises(ValueError, match="unique"):
        index.add(["a", "b"], ids=["same", "same"])
    with pytest.raises(ValueError, match="JSON"):
        index.add(["a"], metadata=[{"x": object()}])
    with pytest.raises(ValueError, match="one each"):
        index.add(["a", "b"], ids=["one"])


def test_list_and_delete_only_indexes(tmp_path, home, encoder):
    docs = write_docs(tmp_path / "docs")
    Index.create("a", docs=docs, encoder=encoder, **OPTS)
    Index.create("b", texts=["x y z"], encoder=encoder, **OPTS)
    (home / "not-an-index").mkdir()
    (home / "not-an-index" / "keep.txt").write_text("mine")
    assert [r["name"] for r in list_indexes()] == ["a", "b"]
    assert delete_index("b") == home / "b" and not (home / "b").exists()
    with pytest.raises(IndexFolderError, match="not an sfp-rag index"):
        delete_index("not-an-index")
    with pytest.raises(IndexFolderError, match="no index at"):
        delete_index("b")
    assert (home / "not-an-index" / "keep.txt").exists()


def test_text_index_over_a_foreign_folder_is_refused(tmp_path, encoder):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x.txt").write_text("keep")
    with pytest.raises(IndexFolderError, match="not an sfp-rag index"):
        Index.create(tmp_path / "mine", texts=["a"], encoder=encoder, **OPTS)
    assert (tmp_path / "mine" / "x.txt").read_text() == "keep"


def test_an_index_records_and_uses_the_query_template(tmp_path, home, tiny_model_dir):
    from sfp_rag.embedding.encoder import SFPEncoder

    question = 'This question : "{text}" is about{rep1}, it can be summarized as'
    asym = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32", query_template=question)
    docs = write_docs(tmp_path / "docs")
    Index.create("kb", docs=docs, encoder=asym, hybrid=False, **OPTS)
    index = Index.open("kb")  # the recorded encoder, built from the manifest
    assert index.info()["query_template"] == question
    hits = index.search("Dogs need a walk every day.", k=3, mode="dense")
    # brute force: cosine of the query (question template) with every stored vector
    vectors = np.load(index.path / "vectors.npy")
    q = asym.encode_queries(["Dogs need a walk every day."])[0]
    assert [h.row for h in hits] == list(np.argsort(-(vectors @ q))[:3])


def test_every_hit_carries_its_raw_cosine_and_bm25(tmp_path, home, encoder):
    """The fused score is relative to the query's best candidates; the raw scores beside it are absolute: each hit's
    cosine equals the query's (as searched) with its stored row, and its BM25 the index's BM25 score for it."""
    index = Index.create("kb", docs=write_docs(tmp_path / "docs"), encoder=encoder, hybrid=True, **OPTS)
    coll = index.collection
    query = "central bank interest rates"
    q = coll.search_queries(encoder.encode_queries([query]))[0]
    scores, ids = coll.bm25.search([query], coll.ntotal)
    bm25 = {int(i): float(s) for s, i in zip(scores[0], ids[0]) if i >= 0}
    for mode in ("hybrid", "dense", "bm25"):
        hits = index.search(query, k=coll.ntotal, mode=mode)
        assert len(hits) == (len(bm25) if mode == "bm25" else coll.ntotal)
        for h in hits:
            if mode == "bm25":
                assert h.cosine is None and h.bm25 == pytest.approx(h.score)
                continue
            assert h.cosine == pytest.approx(float(coll.searched_vectors([h.row])[0] @ q), abs=1e-5)
            assert h.bm25 == (None if mode == "dense" else pytest.approx(bm25.get(h.row, 0.0), abs=1e-5))
            if mode == "dense":
                assert h.cosine == pytest.approx(h.score, abs=1e-6)
    top = index.search(query, k=1)[0]
    assert all(type(x) is float for h in index.search(query, k=3, mode="dense") for x in (h.score, h.cosine))
    assert top.to_dict()["cosine"] == round(top.cosine, 6) and top.to_dict()["bm25"] == round(top.bm25, 6)
    assert repr(top).startswith(f"Hit({top.score:.3f} {top.source}#{top.chunk} '") and len(repr(top)) < 120


def test_create_refuses_an_existing_index_unless_asked(tmp_path, home, encoder):
    docs = write_docs(tmp_path / "docs")
    Index.create("kb", docs=docs, encoder=encoder, **OPTS)
    (docs / "pets" / "birds.txt").write_text("Parrots can live for decades and learn many words.")
    with pytest.raises(IndexFolderError, match=r"already exists.*if_exists='update'.*if_exists='rebuild'"):
        Index.create("kb", docs=docs, encoder=encoder, **OPTS)
    assert "pets/birds.txt" not in Index.open("kb").info()["sources"]  # refused: nothing changed
    updated = Index.create("kb", docs=docs, encoder=encoder, if_exists="update", **OPTS)
    assert "pets/birds.txt" in updated.info()["sources"]
    rebuilt = Index.create("kb", texts=["only this text"], encoder=encoder, if_exists="rebuild", **OPTS)
    assert len(rebuilt) == 1
    with pytest.raises(ValueError, match="if_exists must be one of"):
        Index.create("kb", texts=["x"], encoder=encoder, if_exists="replace", **OPTS)
