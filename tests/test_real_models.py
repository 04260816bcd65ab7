"""Checks against the real offline models (run with ``pytest -m slow``); skipped when their package is absent."""

from __future__ import annotations

import numpy as np
import pytest

from sfp_rag.embedding.backbones import BUILTIN_MODELS, load_tokenizer
from sfp_rag.embedding.prompts import PRESETS
from sfp_rag.embedding.tokenization import PromptTokenizer

pytestmark = pytest.mark.slow

MARKERS = {
    "eol-sum": ("word", "as"),
    "sth-sum": ("something", "as"),
    "sth-also-sum": ("something", "as"),
    "eol": (':"', ':"'),  # one token in both vocabularies
    "sth": ("something", "something"),
    "sum": ("as", "as"),
    "question-sum": ("about", "as"),
}


def _require(name: str):
    if not BUILTIN_MODELS[name].is_installed():
        pytest.skip(f"{name} is not installed ({BUILTIN_MODELS[name].install})")


@pytest.fixture(scope="module", params=list(BUILTIN_MODELS))
def real_tokenizer(request):
    _require(request.param)
    return load_tokenizer(request.param)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_markers_decode_with_real_tokenizers(real_tokenizer, preset):
    pt = PromptTokenizer(real_tokenizer, preset, max_text_tokens=32)
    texts = ["A man is playing a guitar.", 'He said "no" twice?', "x" * 500, "déjà vu — naïve café"]
    for item in pt.tokenize(texts):
        rep1, rep2 = (real_tokenizer.decode([item.input_ids[i]]).strip() for i in (item.rep1, item.rep2))
        assert (rep1, rep2) == MARKERS[preset]


def test_cached_conversion_equals_direct_gguf_load():
    _require("smollm2-135m")
    import torch
    from transformers import AutoModel

    from sfp_rag.embedding.encoder import SFPEncoder

    enc = SFPEncoder.from_pretrained("smollm2-135m", device="cpu", dtype="float32")
    pkg = BUILTIN_MODELS["smollm2-135m"].package_dir()
    direct = AutoModel.from_pretrained(pkg, gguf_file=BUILTIN_MODELS["smollm2-135m"].gguf_name).eval()
    batch = enc.prompt_tokenizer(["A cat sits on the mat."])
    with torch.no_grad():
        ours = enc.model(batch).rep2
        theirs = direct(input_ids=batch.input_ids).last_hidden_state[:, -1]
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(BUILTIN_MODELS))
def test_paraphrases_are_closer_than_unrelated_sentences(name):
    _require(name)
    from sfp_rag.embedding.encoder import SFPEncoder

    enc = SFPEncoder.from_pretrained(name, device="cpu")
    e = enc.encode(["A man is playing a guitar.", "A person plays the guitar.", "Stock prices fell sharply today."])
    sims = e @ e.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("name", list(BUILTIN_MODELS))
def test_fast_tokenizer_equals_transformers_on_real_models(name):
    _require(name)
    from sfp_rag.embedding.backbones import load_fast_tokenizer, resolve_model_dir

    fast = load_fast_tokenizer(resolve_model_dir(name))
    slow = load_tokenizer(name)
    assert fast.pad_token_id == slow.pad_token_id
    texts = ["A man is playing a guitar.", 'He said "no" twice?', "x" * 500, "déjà vu — naïve café", "", "日本語 😀"]
    for preset in PRESETS:
        a, b = PromptTokenizer(slow, preset)(texts), PromptTokenizer(fast, preset)(texts)
        for x, y in zip(a.tensors(), b.tensors()):
            assert (x == y).all()


@pytest.mark.parametrize("key", ["minilm", "mpnet"])
def test_peer_equals_sentence_transformers(key):
    from sfp_rag.evaluation.peers import MeanPoolEncoder, peer_dir, peer_installed

    if not peer_installed(key):
        pytest.skip(f"the {key} peer is not installed")
    st = pytest.importorskip("sentence_transformers")
    texts = ["A man is playing a guitar.", "Stocks fell sharply.", "word " * 400]
    ours = MeanPoolEncoder.peer(key).encode(texts)
    reference = st.SentenceTransformer(str(peer_dir(key)), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.sum(ours * reference, axis=1).min() > 0.9999


def test_shipped_default_is_the_trained_adapter_on_gemma():
    from sfp_rag.embedding.config import default_model_dir
    from sfp_rag.embedding.encoder import SFPEncoder

    _require("gemma3-270m")
    if default_model_dir() is None:
        pytest.skip("this checkout has no packaged default adapter")
    default = SFPEncoder.from_pretrained(device="cpu")
    assert default.config.adapter == str(default_model_dir()) and default.config.model == "gemma3-270m"
    bare = SFPEncoder.from_pretrained("gemma3-270m", template=default.config.template, device="cpu")
    texts = ["A man is playing a guitar.", "A person plays the guitar.", "Stock prices fell sharply today."]
    a, b = default.encode(texts), bare.encode(texts)
    assert np.abs(a - b).max() > 0.05  # the adapter changes the embeddings
    sims = a @ a.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]
