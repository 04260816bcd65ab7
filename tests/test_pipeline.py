from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from sfp_rag.embedding.config import EncoderConfig
from sfp_rag.embedding.encoder import SFPEncoder
from sfp_rag.retrieval.builder import IndexBusyError, build_index
from sfp_rag.retrieval.documents import DocumentError
from sfp_rag.retrieval.faiss_index import brute_force_search
from sfp_rag.retrieval.index_folder import Collection, IndexFolderError, IndexMismatchError, resolve_index_path
from sfp_rag.retrieval.searcher import Searcher
from sfp_rag.retrieval.vector_store import ShardedVectorStore, embed_with_store

DOCS = {
    "pets/cats.txt": "Cats sleep for most of the day. A cat purrs when it is content.",
    "pets/dogs.md": "# Dogs\n\nDogs need a walk every day. Puppies chew on shoes.",
    "finance/markets.txt": "Stock markets fell sharply after the central bank raised interest rates.",
    "help/password.md": "To reset your password open the sign-in page and choose forgot password.",
    "page.html": "<html><body><h1>Tea</h1><p>Green tea is steamed soon after picking.</p></body></html>",
}


def write_docs(root: Path, docs: dict[str, str] = DOCS) -> Path:
    for rel, text in docs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def docs(tmp_path) -> Path:
    return write_docs(tmp_path / "docs")


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")


def _build(docs, encoder, out, **kw):
    return build_index(docs, encoder, out, chunk_size=64, chunk_overlap=8, show_progress=False, **kw)


def test_build_search_and_layout(docs, encoder, tmp_path):
    out = tmp_path / "indexes" / "kb"
    report = _build(docs, encoder, out)
    assert report.files == 5 and report.chunks >= 5 and report.embedded == report.chunks and not report.skipped
    for part in ("manifest.json", "index.faiss", "vectors.npy", "docstore.jsonl", "files.json"):
        assert (out / part).exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["encoder"]["identity"]["dim"] == 32 and manifest["fingerprint"] == encoder.fingerprint()
    assert manifest["corpus"]["files"] == 5 and "torch" in manifest["versions"]
    coll = Collection.open(out)
    assert "<html>" not in " ".join(coll.texts())  # HTML is read as text of <body>
    # stored vectors are the encoder's vectors of the stored texts
    np.testing.assert_allclose(coll.vectors(), encoder.encode(coll.texts()), atol=1e-5)
    # dense search equals brute force over the stored vectors
    searcher = Searcher(coll, encoder)
    q = "a cat sleeping all day"
    hits = searcher.search(q, k=3, mode="dense")
    _, ref = brute_force_search(np.asarray(coll.vectors()), encoder.encode_queries([q]), 3)
    assert [h.row for h in hits] == ref[0].tolist()
    assert hits[0].source in DOCS and hits[0].text


def test_incremental_update_embeds_only_what_changed(docs, encoder, tmp_path):
    out = tmp_path / "kb"
    _build(docs, encoder, out)
    (tmp_path / "kb-first-files.json").write_text((out / "files.json").read_text())
    (docs / "pets" / "dogs.md").write_text("# Dogs\n\nDogs love long walks in the rain.", encoding="utf-8")
    (docs / "finance" / "markets.txt").unlink()
    (docs / "new.txt").write_text("Photosynthesis turns light into sugar.", encoding="utf-8")
    second = _build(docs, encoder, out)
    assert second.changed == ["pets/dogs.md"] and second.removed == ["finance/markets.txt"]
    assert second.added == ["new.txt"]
    table = json.loads((tmp_path / "kb-first-files.json").read_text())
    kept = sum(v["chunks"] for k, v in table.items() if k not in ("pets/dogs.md", "finance/markets.txt"))
    assert second.reused == kept and second.embedded == second.chunks - kept
    coll = Collection.open(out)
    assert set(coll.files) == {"pets/cats.txt", "pets/dogs.md", "help/password.md", "page.html", "new.txt"}
    # the result equals a fresh build of the same folder
    fresh = _build(docs, encoder, tmp_path / "fresh")
    assert fresh.chunks == second.chunks
    np.testing.assert_allclose(
        np.asarray(coll.vectors()), np.asarray(Collection.open(tmp_path / "fresh").vectors()), atol=1e-5
    )


def test_unchanged_folder_embeds_nothing(docs, encoder, tmp_path):
    _build(docs, encoder, tmp_path / "kb")
    again = _build(docs, encoder, tmp_path / "kb")
    assert again.embedded == 0 and again.reused == again.chunks


def test_bad_files_are_skipped_with_reasons(docs, encoder, tmp_path, monkeypatch):
    (docs / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (docs / "empty.txt").write_text("   \n")
    (docs / "big.txt").write_text("word " * 1000)
    (docs / ".hidden.txt").write_text("secret")
    real_read = Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    (docs / "locked.txt").write_text("text")
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    report = _build(docs, encoder, tmp_path / "kb", max_file_mb=0.004)
    assert report.files == 5
    reasons = report.skipped
    assert reasons["blob.bin"].startswith("binary file")
    assert reasons["latin1.txt"].startswith("not UTF-8 (byte 0xe9 at offset 3)")
    assert reasons["empty.txt"] == "empty (no visible text)"
    assert "over the 0.004 MB limit" in reasons["big.txt"]
    assert "Permission denied" in reasons["locked.txt"]
    assert ".hidden.txt" not in reasons and ".hidden.txt" not in Collection.open(tmp_path / "kb").files


def test_bad_folders(tmp_path, encoder):
    with pytest.raises(DocumentError, match="does not exist"):
        _build(tmp_path / "missing", encoder, tmp_path / "kb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DocumentError, match="holds no"):
        _build(tmp_path / "empty", encoder, tmp_path / "kb")
    (tmp_path / "onlybad").mkdir()
    (tmp_path / "onlybad" / "x.bin").write_bytes(b"\x00\x00")
    with pytest.raises(IndexFolderError, match="every file was skipped"):
        _build(tmp_path / "onlybad", encoder, tmp_path / "kb")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DocumentError, match="is a file"):
        _build(tmp_path / "afile", encoder, tmp_path / "kb")


def test_another_encoder_is_refused(docs, encoder, tmp_path, tiny_model_dir):
    out = tmp_path / "kb"
    _build(docs, encoder, out)
    other = SFPEncoder(encoder.model, encoder.tokenizer, encoder.config.replace(template="eol"))
    with pytest.raises(IndexMismatchError, match="template"):
        _build(docs, other, out)
    with pytest.raises(IndexMismatchError, match="another encoder"):
        Searcher(Collection.open(out), other)
    report = _build(docs, other, out, rebuild=True)  # --rebuild switches encoder
    assert report.reused == 0 and Collection.open(out).fingerprint == other.fingerprint()


def trained_adapter(tiny_model_dir, folder: Path) -> Path:
    """A tiny LoRA adapter trained for two steps (a few seconds)."""
    from sfp_rag.training.trainer import train
    from tests.test_training import SENTENCES, _config

    data = folder.parent / f"{folder.name}.txt"
    data.write_text("\n".join(SENTENCES))
    train(_config(tiny_model_dir, data, folder, max_steps=2), show_progress=False)
    return folder


def retrain_in_place(adapter: Path) -> None:
    """What retraining an adapter folder (or upgrading the shipped default) does to an index that records it."""
    from safetensors.numpy import load_file, save_file

    weights = adapter / "adapter_model.safetensors"
    save_file({k: 2 * v for k, v in load_file(str(weights)).items()}, str(weights))


def test_an_index_whose_adapter_changed_since_is_refused_not_searched(docs, tmp_path, tiny_model_dir, monkeypatch):
    """An index opened without an encoder rebuilds the one its manifest records; if that adapter's weights changed
    since the build, queries would land in another space than the index's vectors: refused, with the fix."""
    from click.testing import CliRunner

    from sfp_rag.cli import main

    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    adapter = trained_adapter(tiny_model_dir, tmp_path / "adapter")
    built_by = SFPEncoder.from_pretrained(str(adapter), device="cpu", dtype="float32", runtime="torch")
    _build(docs, built_by, tmp_path / "kb", hybrid=True)
    assert Searcher.open(tmp_path / "kb", device="cpu", dtype="float32", runtime="torch").search("cats", mode="dense")
    retrain_in_place(adapter)
    with pytest.raises(IndexMismatchError, match="has changed since") as err:
        Searcher.open(tmp_path / "kb", device="cpu", dtype="float32", runtime="torch")
    message = str(err.value)
    assert "adapter_sha256" in message and "holds other weights" in message and "upgrade" in message
    assert f"sfp-rag index {docs.resolve()} --out {tmp_path / 'kb'} --rebuild" in message and "--bm25" in message
    lazy = Searcher.open(tmp_path / "kb", lazy=True, device="cpu", dtype="float32", runtime="torch")
    assert lazy.search("cats", mode="bm25")[0].source == "pets/cats.txt"  # keywords need no model: still served
    with pytest.raises(IndexMismatchError, match="has changed since"):
        lazy.search("cats", mode="dense")
    result = CliRunner().invoke(main, ["-q", "query", "cats", "--index", str(tmp_path / "kb"), "--runtime", "torch"])
    assert result.exit_code == 1 and "has changed since" in result.output and "--rebuild" in result.output
    with pytest.raises(IndexMismatchError, match="holds other weights.*--rebuild"):  # an update says it too
        _build(docs, SFPEncoder.from_pretrained(str(adapter), device="cpu", dtype="float32"), tmp_path / "kb")


def test_interrupted_build_keeps_the_old_index_and_resumes(docs, encoder, tmp_path, monkeypatch):
    import sfp_rag.retrieval.builder as builder

    out = tmp_path / "kb"
    _build(docs, encoder, out)
    before = (out / "vectors.npy").read_bytes()
    for i in range(6):
        (docs / f"more{i}.txt").write_text(f"Extra document number {i} about tea.", encoding="utf-8")
    monkeypatch.setattr(builder, "EMBED_GROUP", 2)
    real = SFPEncoder.encode_documents
    calls = []

    def crash_on_second_group(self, texts, **kw):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second group is being embedded
        return real(self, texts, **kw)

    monkeypatch.setattr(SFPEncoder, "encode_documents", crash_on_second_group)
    with pytest.raises(KeyboardInterrupt):
        _build(docs, encoder, out)
    assert (out / "vectors.npy").read_bytes() == before  # the old index is intact and still opens
    assert Collection.open(out).ntotal == len(Collection.open(out).texts())
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no half-built folder left behind
    new_chunks = sum(1 for _ in (docs).glob("more*.txt"))  # one chunk per short file
    calls.clear()
    monkeypatch.setattr(
        SFPEncoder, "encode_documents", lambda self, t, **kw: calls.append(len(t)) or real(self, t, **kw)
    )
    report = _build(docs, encoder, out)
    assert sum(calls) == new_chunks - 2  # the first group's vectors were kept: not embedded again
    assert report.files == 11 and not (tmp_path / ".kb.partial").exists()
    _build(docs, encoder, tmp_path / "fresh")
    np.testing.assert_allclose(
        np.asarray(Collection.open(out).vectors()),
        np.asarray(Collection.open(tmp_path / "fresh").vectors()),
        atol=1e-5,
    )


def test_second_writer_is_locked_out(docs, encoder, tmp_path):
    from filelock import FileLock

    with FileLock(str(tmp_path / ".kb.lock")):
        with pytest.raises(IndexBusyError, match="another process is writing"):
            _build(docs, encoder, tmp_path / "kb")


def test_damaged_index_files_are_reported(docs, encoder, tmp_path):
    out = tmp_path / "kb"
    _build(docs, encoder, out)
    (out / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable FAISS index"):
        Searcher(Collection.open(out), encoder).search("cats")
    _build(docs, encoder, out, rebuild=True)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFolderError, match="damaged.*--rebuild"):
        Collection.open(out)
    _build(docs, encoder, out, rebuild=True)
    lines = (out / "docstore.jsonl").read_text().splitlines()
    (out / "docstore.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(IndexFolderError, match="lines, expected"):
        Searcher(Collection.open(out), encoder).search("cats")
    (out / "index.faiss").unlink()
    with pytest.raises(IndexFolderError, match="missing"):
        Collection.open(out)
    with pytest.raises(IndexFolderError, match="no index at"):
        Collection.open(tmp_path / "nothing-here")


def test_other_folder_in_the_way_is_not_overwritten(docs, encoder, tmp_path):
    out = tmp_path / "kb"
    out.mkdir()
    (out / "precious.txt").write_text("do not delete")
    with pytest.raises(IndexFolderError, match="not an sfp-rag index"):
        _build(docs, encoder, out)
    assert (out / "precious.txt").exists()


def test_approximate_index_type_and_hybrid(docs, encoder, tmp_path):
    out = tmp_path / "kb"
    _build(docs, encoder, out, factory="HNSW32", hybrid=True)
    searcher = Searcher(Collection.open(out), encoder)
    assert searcher.collection.manifest["index"]["factory"] == "HNSW32"
    bm25 = searcher.search("reset password", k=2, mode="bm25")
    assert bm25[0].source == "help/password.md"
    hybrid = searcher.search(["reset password", "stock markets"], k=3, mode="hybrid")
    assert hybrid[0][0].source == "help/password.md" and len(hybrid[1]) == 3
    with pytest.raises(ValueError, match="mode must be"):
        searcher.search("x", mode="sparse")
    (docs / "new.txt").write_text("Photosynthesis turns light into sugar.", encoding="utf-8")
    _build(docs, encoder, out, hybrid=False)  # an update keeps the BM25 index an index was built with
    assert Collection.open(out).manifest["hybrid"] and (out / "bm25").exists()
    _build(docs, encoder, tmp_path / "dense-only", hybrid=False)
    with pytest.raises(IndexFolderError, match="--hybrid"):
        Searcher(Collection.open(tmp_path / "dense-only"), encoder).search("x", mode="hybrid")


def tm2c2_reference(cosines, bm25_scores, bm25_ids, alpha: float, depth: int) -> tuple[dict[int, float], int]:
    """TM2C2 by hand for one query: its exact cosine with every row and BM25's top ``depth``; the fused score of each
    candidate of either list, and how many candidates only BM25 found (those the index must look up)."""
    dense = [int(i) for i in np.argsort(-cosines)[:depth]]
    sparse = {int(i): float(s) for s, i in zip(bm25_scores, bm25_ids) if i >= 0}
    ref = {
        d: alpha * (cosines[d] + 1) / (cosines[dense[0]] + 1) + (1 - alpha) * sparse.get(d, 0.0) / max(sparse.values())
        for d in set(dense) | set(sparse)
    }
    return ref, len(set(sparse) - set(dense))


def test_hybrid_search_equals_a_brute_force_tm2c2_reference(docs, encoder, tmp_path):
    """Index path, with a depth below the corpus size so BM25 finds chunks the dense search does not: every
    candidate is fused with its exact cosine from the stored vectors, a dense-only one with BM25 score 0."""
    from sfp_rag.retrieval.fusion import hybrid_search

    (docs / "more.txt").write_text("Cats and dogs share a house. Interest in tea rose. Reset the password.")
    out = tmp_path / "kb"
    _build(docs, encoder, out, hybrid=True)
    searcher = Searcher(Collection.open(out), encoder)
    coll = searcher.collection
    queries = ["reset password", "cats and tea", "interest rates", "dogs"]
    vectors = encoder.encode_queries(queries)
    alpha, depth = 0.6, 2
    hits = hybrid_search(searcher, queries, k=2, mode="hybrid", depth=depth, alpha=alpha, vectors=vectors)
    bm25_scores, bm25_ids = coll.bm25.search(queries, depth)
    looked_up = 0
    for q, vec, got, bs, bi in zip(queries, vectors, hits, bm25_scores, bm25_ids):
        ref, only_bm25 = tm2c2_reference(np.asarray(coll.vectors()) @ vec, bs, bi, alpha, depth)
        looked_up += only_bm25
        assert [h.row for h in got] == sorted(ref, key=lambda d: (-ref[d], str(d)))[:2], q
        assert [h.score for h in got] == pytest.approx(sorted(ref.values(), reverse=True)[:2], abs=1e-5)
    assert looked_up > 0  # the case the lookup is for did occur


def test_searcher_open_rebuilds_the_recorded_encoder(docs, encoder, tmp_path):
    out = tmp_path / "kb"
    _build(docs, encoder, out)
    searcher = Searcher.open(out, device="cpu")
    assert searcher.encoder.fingerprint() == encoder.fingerprint()
    assert searcher.search("cats", k=1)[0].source


def test_resolve_index_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "home"))
    with pytest.raises(IndexFolderError, match="no index in"):
        resolve_index_path(None)
    for name in ("a", "b"):
        (tmp_path / "home" / name).mkdir(parents=True)
        (tmp_path / "home" / name / "manifest.json").write_text("{}")
    with pytest.raises(IndexFolderError, match="several indexes.*a, b"):
        resolve_index_path(None)
    assert resolve_index_path("a") == tmp_path / "home" / "a"
    assert resolve_index_path(str(tmp_path / "x")) == tmp_path / "x"


def test_vector_store_resumes_after_a_crash(tmp_path):
    calls = []

    def embed(texts):
        calls.append(list(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

    texts = [f"text {i}" * (i + 1) for i in range(10)] + ["text 0"]  # a duplicate is embedded once
    store = ShardedVectorStore(tmp_path / "s", dim=2)
    with pytest.raises(KeyboardInterrupt):
        embed_with_store(texts, embed, store, "fp", group_size=2)
    assert len(ShardedVectorStore(tmp_path / "s", dim=2)) == 4  # two whole groups survived
    calls.clear()
    store = ShardedVectorStore(tmp_path / "s", dim=2)
    out = embed_with_store(texts, embed, store, "fp", group_size=100)
    assert sum(len(c) for c in calls) == 6  # only the 6 missing texts
    np.testing.assert_array_equal(out[:, 0], [len(t) for t in texts])
    other = embed_with_store(texts[:1], lambda t: np.zeros((len(t), 2), np.float32), store, "other-encoder")
    assert other[0, 0] == 0  # keys include the encoder fingerprint


def test_encoder_config_round_trip_in_manifest(docs, encoder, tmp_path):
    _build(docs, encoder, tmp_path / "kb")
    recorded = json.loads((tmp_path / "kb" / "manifest.json").read_text())["encoder"]["config"]
    assert "device" not in recorded and EncoderConfig.from_dict(recorded).template == encoder.config.template


def test_searcher_falls_back_when_the_fast_tokenizer_disagrees(docs, encoder, tmp_path):
    from sfp_rag.embedding.tokenization import RustTokenizer

    out = tmp_path / "kb"
    _build(docs, encoder, out)
    fast = Searcher.open(out, device="cpu", dtype="float32")
    assert isinstance(fast.encoder.tokenizer, RustTokenizer)  # the quick path agrees with the recorded ids
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["encoder"]["probe_ids"] = [0, 1, 2]
    (out / "manifest.json").write_text(json.dumps(manifest))
    slow = Searcher.open(out, device="cpu", dtype="float32")
    assert not isinstance(slow.encoder.tokenizer, RustTokenizer)
    assert [h.row for h in slow.search("cats", k=3)] == [h.row for h in fast.search("cats", k=3)]


def test_the_library_configures_no_logging_and_prints_no_noise(tmp_path, tiny_model_dir):
    """Loading a model, encoding and indexing (a broken PDF included) leave the caller's stderr and logging alone."""
    import subprocess
    import sys

    docs = write_docs(tmp_path / "docs")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    code = (
        "import logging, sys\n"
        "from sfp_rag import SFPEncoder, build_index\n"
        f"enc = SFPEncoder.from_pretrained({str(tiny_model_dir)!r}, device='cpu', dtype='float32')\n"
        "enc.encode(['hello'])\n"
        f"r = build_index({str(docs)!r}, enc, {str(tmp_path / 'kb')!r}, chunk_size=64)\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), root.level, 'broken.pdf' in r.skipped)\n"
    )
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", str(logging.WARNING), "True"]
    assert done.stderr == "", done.stderr


def test_ondisk_and_auto_index_types_through_the_builder(docs, encoder, tmp_path):
    report = _build(docs, encoder, tmp_path / "auto", factory="auto")
    assert report.index_type == "Flat"  # a small corpus: exact search
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert manifest["index"]["requested"] == "auto" and manifest["index"]["factory"] == "Flat"
    report = _build(docs, encoder, tmp_path / "disk", factory="IVF2,Flat", ondisk=True)
    assert (tmp_path / "disk" / "index.ivfdata").exists()
    manifest = json.loads((tmp_path / "disk" / "manifest.json").read_text())
    assert manifest["index"]["ondisk"] is True and manifest["index"]["search"] == {"nprobe": 2}
    searcher = Searcher(Collection.open(tmp_path / "disk"), encoder)
    exact = Searcher(Collection.open(tmp_path / "auto"), encoder)
    query = "Dogs need a walk every day."
    wide = searcher.search(query, k=3, mode="dense", search_params={"nprobe": 2})
    assert [h.row for h in wide] == [h.row for h in exact.search(query, k=3, mode="dense")]
    with pytest.raises(ValueError, match="applies to HNSW"):
        searcher.search(query, k=3, mode="dense", search_params={"efSearch": 8})
    # an update keeps the on-disk layout and the requested type
    (docs / "new.txt").write_text("A new note about tea gardens.")
    _build(docs, encoder, tmp_path / "disk", factory="IVF2,Flat", ondisk=True)
    assert Collection.open(tmp_path / "disk").ntotal == report.chunks + 1


# --- what a new user tripped on: HTML, encodings, invisible text --------------------------------------------------


def test_html_is_read_as_text_by_every_install(tmp_path, monkeypatch):
    """Tags stripped, scripts and styles dropped, the title kept, whether or not the docs extra is installed."""
    import builtins

    from sfp_rag.retrieval.documents import SkipFile, html_text, read_text, scan_folder

    page = (
        "<!doctype html><html><head><title>Espresso &amp; crema</title><style>p {color: red}</style>"
        "<script>var secret = 1;</script></head><body><h1>Pulling a shot</h1><p>Use 18 g of coffee.</p>"
        "<noscript>enable js</noscript><p>Grind <b>finer</b> if it runs fast.</p></body></html>"
    )
    assert html_text(page) == "Espresso & crema\n\nPulling a shot\nUse 18 g of coffee.\nGrind finer if it runs fast."
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "page.html").write_text(page)
    (tmp_path / "d" / "paper.pdf").write_bytes(b"%PDF-1.4 not really")
    files = {f.relpath: f for f in scan_folder(tmp_path / "d").files}
    with_extra = read_text(files["page.html"])
    real_import = builtins.__import__

    def no_readers(name, *args, **kwargs):  # the base install: llama-index-readers-file is missing
        if name.startswith("llama_index.readers.file"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_readers)
    monkeypatch.setattr("sfp_rag.retrieval.documents._reader_cache", {})
    assert read_text(files["page.html"]) == with_extra == html_text(page)
    with pytest.raises(SkipFile, match=r"\.pdf files need the docs extra: pip install 'sfp-rag\[docs\]'"):
        read_text(files["paper.pdf"])


def test_utf16_and_invisible_files(tmp_path):
    from sfp_rag.retrieval.documents import SkipFile, read_text, scan_folder

    d = tmp_path / "d"
    d.mkdir()
    (d / "le.txt").write_bytes("\ufeffCafé au lait.".encode("utf-16-le"))
    (d / "be.txt").write_bytes("\ufeffCafé au lait.".encode("utf-16-be"))
    (d / "nobom.txt").write_bytes("Café".encode("utf-16-le"))
    (d / "invisible.md").write_text("\u200b\u200c\u2060\ufeff \n\u00a0\u200d")
    files = {f.relpath: f for f in scan_folder(d).files}
    assert read_text(files["le.txt"]) == read_text(files["be.txt"]) == "Café au lait."
    with pytest.raises(SkipFile, match="UTF-16 without a byte-order mark: convert it to UTF-8"):
        read_text(files["nobom.txt"])
    with pytest.raises(SkipFile, match="empty"):
        read_text(files["invisible.md"])
