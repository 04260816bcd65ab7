"""The OpenVINO runtime: chosen where it can run, the same vectors as torch, refused where it cannot run.

The tiny model is exported and converted for real (torch.export, then OpenVINO): a few seconds per test that
converts. Tests that need OpenVINO skip with a reason where it is not installed."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sfp_rag.embedding.openvino_runtime import openvino_installed, resolve_runtime

needs_openvino = pytest.mark.skipif(
    not openvino_installed(), reason="openvino is not installed (the dev extra has it)"
)

TEXTS = [
    "A cat sits on the mat.",
    "Retrieval augmented generation needs good embeddings of questions and passages, " * 6,
    "",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "How do I reset my password?",
]


def test_resolve_runtime_rules(monkeypatch):
    assert resolve_runtime("torch", "cpu") == "torch"
    assert resolve_runtime("auto", "cuda") == "torch"
    assert resolve_runtime("auto", "cpu", load_in_4bit=True) == "torch"
    monkeypatch.setattr("sfp_rag.embedding.openvino_runtime.openvino_installed", lambda: False)
    assert resolve_runtime("auto", "cpu") == "torch"  # nothing to fall back from: torch is the runtime then
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_runtime("openvino", "cuda")
    with pytest.raises(ValueError, match="4-bit"):
        resolve_runtime("openvino", "cpu", load_in_4bit=True)
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve_runtime("onnx", "cpu")


def test_config_refuses_unknown_runtime():
    from sfp_rag.embedding.config import EncoderConfig

    with pytest.raises(ValueError, match="runtime must be one of"):
        EncoderConfig(runtime="tensorrt")


def test_openvino_requested_without_it_says_how_to_install(monkeypatch):
    import sfp_rag.embedding.openvino_runtime as ovr

    monkeypatch.setattr(ovr, "require", _raise_import_error)
    with pytest.raises(ImportError, match=r"sfp-rag\[openvino\]"):
        ovr.resolve_runtime("openvino", "cpu")


def _raise_import_error(module, purpose, install):
    raise ImportError(f"{purpose} needs {module}: {install}")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@needs_openvino
def test_openvino_vectors_match_torch_and_do_not_depend_on_the_batch(tiny_model_dir, cache):
    from sfp_rag.embedding.encoder import SFPEncoder

    torch_enc = SFPEncoder.from_pretrained(str(tiny_model_dir), runtime="torch", dtype="float32")
    ov_enc = SFPEncoder.from_pretrained(str(tiny_model_dir), runtime="openvino", dtype="float32")
    assert ov_enc.runtime == {"runtime": "openvino", "precision": "f32", "version": ov_enc.runtime["version"]}
    assert torch_enc.runtime == {"runtime": "torch", "dtype": "float32"}
    assert "runtime='openvino'" in repr(ov_enc)
    reference = torch_enc.encode(TEXTS, batch_size=2)
    batched = ov_enc.encode(TEXTS, batch_size=4)
    np.testing.assert_allclose(np.sum(reference * batched, axis=1), 1.0, atol=1e-4)
    one_by_one = np.stack([ov_enc.encode(t) for t in TEXTS])  # batch of one: no padding at all
    np.testing.assert_allclose(one_by_one, batched, atol=1e-4)
    assert ov_enc.fingerprint() == torch_enc.fingerprint()  # the runtime is not part of the vectors' identity
    assert list((cache / "openvino").glob("*/model.xml"))  # converted into the cache


@needs_openvino
def test_auto_picks_openvino_on_cpu_and_converts_once(tiny_model_dir, cache, monkeypatch):
    import sfp_rag.embedding.openvino_runtime as ovr
    from sfp_rag.embedding.encoder import SFPEncoder

    first = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu")
    assert first.runtime["runtime"] == "openvino"

    def no_second_export(*args):
        raise AssertionError("the cached conversion should have been read")

    monkeypatch.setattr(ovr, "_export", no_second_export)
    second = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu")
    np.testing.assert_array_equal(first.encode(TEXTS), second.encode(TEXTS))


@needs_openvino
def test_openvino_backbone_refuses_what_it_cannot_run(tiny_model_dir, cache):
    from sfp_rag.embedding.encoder import SFPEncoder

    enc = SFPEncoder.from_pretrained(str(tiny_model_dir), runtime="openvino", dtype="float32")
    batch = enc.prompt_tokenizer(["a text", "another, longer text"], padding_side="left")
    with pytest.raises(ValueError, match="right-padded"):
        enc.model(batch)


@needs_openvino
def test_index_records_its_runtime_and_the_other_runtime_searches_it(tiny_model_dir, cache, tmp_path, caplog):
    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.retrieval.builder import build_index
    from sfp_rag.retrieval.searcher import Searcher

    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(TEXTS[:2] + TEXTS[3:]):
        (docs / f"{i}.txt").write_text(text)
    encoder = SFPEncoder.from_pretrained(str(tiny_model_dir), runtime="torch", dtype="float32")
    build_index(docs, encoder, tmp_path / "index", show_progress=False)
    with caplog.at_level(logging.INFO, logger="sfp_rag.retrieval.searcher"):
        searcher = Searcher.open(tmp_path / "index", runtime="openvino", dtype="float32")
    assert searcher.collection.manifest["encoder"]["runtime"] == {"runtime": "torch", "dtype": "float32"}
    assert "runtime" not in searcher.collection.manifest["encoder"]["config"]  # the reader's choice, like dtype
    assert "built with the torch runtime and is searched with openvino" in caplog.text
    hits = searcher.search("How do I reset my password?", k=1, mode="dense")
    assert hits[0].text.startswith("How do I reset my password?")
    assert hits[0].cosine == pytest.approx(1.0, abs=1e-3)  # the stored torch vector, found by the OpenVINO query


@needs_openvino
def test_a_model_that_cannot_be_converted_runs_with_torch_and_the_attempt_is_remembered(
    tiny_model_dir, cache, monkeypatch, caplog
):
    import sfp_rag.embedding.openvino_runtime as ovr
    from sfp_rag.embedding.encoder import SFPEncoder

    calls = []

    def unsupported(*args):
        calls.append(args)
        raise RuntimeError("no conversion rule for aten::something")

    monkeypatch.setattr(ovr, "_export", unsupported)
    with caplog.at_level(logging.WARNING):
        enc = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")
    assert enc.runtime["runtime"] == "torch" and enc.encode("a text").shape == (enc.dim,)
    assert "could not be converted for OpenVINO: RuntimeError: no conversion rule" in caplog.text
    assert "running it with torch instead" in caplog.text
    SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")
    assert len(calls) == 1  # the failure is remembered: no second attempt
    with pytest.raises(ovr.ConversionError, match="delete it to retry"):  # asked for explicitly: an error
        SFPEncoder.from_pretrained(str(tiny_model_dir), runtime="openvino", dtype="float32")
