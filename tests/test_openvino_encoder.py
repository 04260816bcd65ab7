"""The torch-free OpenVINOEncoder: the same vectors and identity as SFPEncoder on OpenVINO, chosen by a searcher
only where it can serve, and a cold search in a fresh process that never imports torch.

The tiny model is converted for real once per test that needs it (a few seconds). Skipped without OpenVINO."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sfp_rag.embedding.openvino_runtime import openvino_installed

pytestmark = pytest.mark.skipif(not openvino_installed(), reason="openvino is not installed (the dev extra has it)")

TEXTS = [
    "A cat sits on the mat.",
    "Retrieval augmented generation needs good embeddings of questions and passages, " * 6,
    "Photosynthesis converts light energy into chemical energy in plants.",
    "How do I reset my password?",
    "",
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def converted(tiny_model_dir, cache):
    """The tiny model's SFPEncoder on OpenVINO (f32, an asymmetric query template); building it converts."""
    from sfp_rag.embedding.encoder import SFPEncoder

    return SFPEncoder.from_pretrained(
        str(tiny_model_dir), runtime="openvino", dtype="float32", device="cpu", query_template="question-sum"
    )


def test_the_same_vectors_identity_and_probe_as_sfp_encoder(tiny_model_dir, converted):
    from sfp_rag.embedding.openvino_encoder import OpenVINOEncoder

    quick = OpenVINOEncoder.from_cache(
        str(tiny_model_dir), runtime="openvino", dtype="float32", device="cpu", query_template="question-sum"
    )
    assert quick is not None and quick.runtime == converted.runtime
    assert quick.fingerprint() == converted.fingerprint()
    assert quick.document_fingerprint() == converted.document_fingerprint()
    assert quick.probe_ids() == converted.probe_ids() and quick.dim == converted.dim
    for kwargs in ({}, {"prompt_name": "query"}, {"pooling": "mean"}, {"pooling": "concat"}, {"pooling": "rep1"},
                   {"normalize_embeddings": False}, {"batch_size": 2}, {"max_batch_tokens": 64},
                   {"truncate_dim": 5}, {"truncate_dim": 5, "pooling": "concat"}):  # fmt: skip
        np.testing.assert_allclose(quick.encode(TEXTS, **kwargs), converted.encode(TEXTS, **kwargs), atol=1e-6)
    np.testing.assert_allclose(quick.encode_queries("a question"), converted.encode_queries("a question"), atol=1e-6)
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(quick.full_dim, quick.full_dim)))[0]
    quick._rotation = converted._rotation = (rotation.astype(np.float32), "test")  # both cut onto the same directions
    np.testing.assert_allclose(quick.encode(TEXTS, truncate_dim=5), converted.encode(TEXTS, truncate_dim=5), atol=1e-5)
    assert quick.encode([]).shape == (0, quick.dim)
    a, b = quick.encode(TEXTS[:2]), quick.encode(TEXTS[2:4])
    np.testing.assert_allclose(quick.similarity(a, b), converted.similarity(a, b).numpy(), atol=1e-6)
    with pytest.raises(TypeError, match="unexpected keyword"):
        quick.encode("x", convert_to_tensor=True)  # torch tensors are SFPEncoder's: said, not ignored


def test_from_cache_only_serves_what_it_can_run_without_torch(tiny_model_dir, cache, monkeypatch):
    from sfp_rag.embedding.openvino_encoder import OpenVINOEncoder, _device_is_cpu

    model = str(tiny_model_dir)
    assert OpenVINOEncoder.from_cache(model, dtype="float32", device="cpu") is None  # not converted yet
    from sfp_rag.embedding.encoder import SFPEncoder

    SFPEncoder.from_pretrained(model, runtime="openvino", dtype="float32", device="cpu")
    assert OpenVINOEncoder.from_cache(model, dtype="float32", device="cpu") is not None
    assert OpenVINOEncoder.from_cache(model, runtime="torch", device="cpu") is None
    assert OpenVINOEncoder.from_cache(model, device="cuda") is None
    assert OpenVINOEncoder.from_cache(model, device="cpu", load_in_4bit=True) is None
    assert _device_is_cpu("cpu") and not _device_is_cpu("cuda:0") and not _device_is_cpu("mps")
    monkeypatch.setattr(sys, "platform", "darwin")  # auto may be MPS there: left to SFPEncoder
    assert not _device_is_cpu("auto")


def test_precision_follows_dtype_as_the_torch_path_resolves_it():
    import torch

    from sfp_rag._utils import resolve_dtype
    from sfp_rag.embedding.openvino_runtime import precision_name

    for dtype in ("auto", "float32", "bfloat16", "float16", "fp32", "bf16"):
        assert precision_name(dtype) == precision_name(resolve_dtype(dtype, "cpu"))
    assert precision_name(torch.bfloat16) == "bf16"


@pytest.fixture
def index(tiny_model_dir, cache, tmp_path):
    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.retrieval.builder import build_index

    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(TEXTS[:4]):
        (docs / f"{i}.txt").write_text(text)
    encoder = SFPEncoder.from_pretrained(str(tiny_model_dir), runtime="openvino", dtype="float32", device="cpu")
    build_index(docs, encoder, tmp_path / "index", show_progress=False)
    return tmp_path / "index"


def test_a_lazy_searcher_embeds_with_it_and_ranks_as_the_full_encoder(index):
    from sfp_rag.embedding.openvino_encoder import OpenVINOEncoder
    from sfp_rag.retrieval.searcher import Searcher

    quick = Searcher.open(index, lazy=True)
    full = Searcher.open(index)
    for mode in ("dense", "hybrid"):
        a, b = quick.search("How do I reset my password?", k=3, mode=mode), full.search(TEXTS[3], k=3, mode=mode)
        assert [h.row for h in a] == [h.row for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    assert isinstance(quick.embedder(), OpenVINOEncoder) and quick.encoder is None
    assert type(quick.load_encoder()).__name__ == "SFPEncoder"  # what builds and updates indexes is unchanged
    assert quick.embedder() is quick.encoder  # once loaded, the full encoder embeds
    assert type(Searcher.open(index, lazy=True, runtime="torch").embedder()).__name__ == "SFPEncoder"


def test_a_cold_search_in_a_fresh_process_does_not_import_torch(index, cache):
    script = (
        "import json, sys\n"
        "from sfp_rag.retrieval.searcher import search\n"
        f"hits = search('How do I reset my password?', index={str(index)!r}, k=1)\n"
        "print(json.dumps({'text': hits[0].text, 'torch': 'torch' in sys.modules,\n"
        "                  'transformers': 'transformers' in sys.modules}))\n"
    )
    env = {**os.environ, "SFP_RAG_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"text": TEXTS[3], "torch": False, "transformers": False}


def test_the_torch_free_path_refuses_an_index_whose_adapter_changed_since(tiny_model_dir, cache, tmp_path):
    """The quick encoder comes from the cache of the adapter's current weights: after the adapter changed (retrained
    in place, a new shipped default) it is converted anew and would serve another model than the index's."""
    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.embedding.openvino_encoder import OpenVINOEncoder
    from sfp_rag.retrieval.builder import build_index
    from sfp_rag.retrieval.index_folder import IndexMismatchError
    from sfp_rag.retrieval.searcher import Searcher
    from tests.test_pipeline import retrain_in_place, trained_adapter, write_docs

    adapter = trained_adapter(tiny_model_dir, tmp_path / "adapter")
    settings = {"runtime": "openvino", "dtype": "float32", "device": "cpu"}
    build_index(write_docs(tmp_path / "docs"), SFPEncoder.from_pretrained(str(adapter), **settings),
                tmp_path / "kb", show_progress=False)  # fmt: skip
    assert isinstance(Searcher.open(tmp_path / "kb", lazy=True).embedder(), OpenVINOEncoder)  # the quick path
    retrain_in_place(adapter)
    SFPEncoder.from_pretrained(str(adapter), **settings)  # the new weights converted (any later use does it)
    searcher = Searcher.open(tmp_path / "kb", lazy=True)
    with pytest.raises(IndexMismatchError, match="has changed since.*holds other weights"):
        searcher.search("cats", mode="dense")
