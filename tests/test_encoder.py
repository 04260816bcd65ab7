from __future__ import annotations

import logging

import numpy as np
import pytest

from sfp_rag.embedding.config import EncoderConfig
from sfp_rag.embedding.encoder import SFPEncoder, plan_batches

TEXTS = [
    "a man is playing a guitar",
    "",
    "dogs run in the park",
    "the cat sat on the mat and then it slept for a very long time indeed",
    "how do I reset my password?",
    "x",
]


def test_batched_equals_one_by_one(tiny_encoder):
    texts = [t for t in TEXTS if t]
    batched = tiny_encoder.encode(texts, batch_size=3)
    single = np.stack([tiny_encoder.encode(t) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_token_budget_batches_give_the_same_vectors(tiny_encoder):
    texts = [t for t in TEXTS if t]
    a = tiny_encoder.encode(texts, batch_size=64)
    b = tiny_encoder.encode(texts, batch_size=64, max_batch_tokens=40)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_shapes_dtype_and_normalisation(tiny_encoder):
    out = tiny_encoder.encode(["a", "b c"])
    assert out.shape == (2, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    one = tiny_encoder.encode("a")
    assert one.shape == (32,)
    raw = tiny_encoder.encode(["a", "b c"], normalize_embeddings=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    assert tiny_encoder.encode([]).shape == (0, 32)


def test_pooling_modes(tiny_encoder):
    texts = ["a cat", "a dog"]
    r1 = tiny_encoder.encode(texts, pooling="rep1")
    r2 = tiny_encoder.encode(texts, pooling="rep2")
    mean = tiny_encoder.encode(texts, pooling="mean", normalize_embeddings=False)
    np.testing.assert_allclose(mean, (r1 + r2) / 2, atol=1e-5)
    concat = tiny_encoder.encode(texts, pooling="concat")
    assert concat.shape == (2, 64)
    with pytest.raises(ValueError, match="pooling"):
        tiny_encoder.encode(texts, pooling="cls")


def test_empty_string_is_embedded_with_a_warning(tiny_encoder, caplog):
    with caplog.at_level(logging.WARNING):
        out = tiny_encoder.encode(["", "a"])
    assert np.isfinite(out).all()
    assert "empty" in caplog.text


def test_non_strings_are_refused(tiny_encoder):
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        tiny_encoder.encode(["a", None])


def test_very_long_text_is_truncated_not_rejected(tiny_encoder):
    long_text = "the cat sat on the mat " * 2000
    out = tiny_encoder.encode([long_text, "short"])
    assert out.shape == (2, 32)


@pytest.mark.parametrize("n, bs, budget", [(10, 3, None), (7, 100, 50), (1, 1, None), (20, 4, 10)])
def test_plan_batches_covers_every_row_once(n, bs, budget):
    lengths = [(i * 7) % 11 + 1 for i in range(n)]
    batches = plan_batches(lengths, bs, budget)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(n))
    for b in batches:
        assert len(b) <= bs
        if budget is not None and len(b) > 1:
            assert len(b) * max(lengths[i] for i in b) <= budget
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    with pytest.raises(ValueError):
        plan_batches([1], 0)


def test_identity_changes_with_what_changes_vectors(tiny_model, bpe_tokenizer):
    a = SFPEncoder(tiny_model, bpe_tokenizer, EncoderConfig(model="tiny", template="eol-sum"))
    b = SFPEncoder(tiny_model, bpe_tokenizer, EncoderConfig(model="tiny", template="eol"))
    c = SFPEncoder(tiny_model, bpe_tokenizer, EncoderConfig(model="tiny", template="eol-sum", dtype="bf16"))
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == c.fingerprint()  # precision is not part of the identity
    assert a.identity()["dim"] == 32


def test_from_pretrained_on_a_model_dir(tiny_model_dir):
    enc = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", template="sth-sum", pooling="mean")
    assert enc.config.model == str(tiny_model_dir.resolve())
    assert enc.encode(["hello"]).shape == (1, 32)


def test_config_validation():
    with pytest.raises(ValueError, match="pooling"):
        EncoderConfig(pooling="avg")
    with pytest.raises(ValueError, match="dtype"):
        EncoderConfig(dtype="int3")
    with pytest.raises(ValueError, match="device"):
        EncoderConfig(device="tpu")
    with pytest.raises(ValueError, match="max_text_tokens"):
        EncoderConfig(max_text_tokens=0)
    with pytest.raises(ValueError, match="unknown template"):
        EncoderConfig(template="nope")
    with pytest.raises(ValueError, match="unknown key"):
        EncoderConfig.from_dict({"model": "x", "temperature": 1})
    assert EncoderConfig(dtype="bf16").dtype == "bfloat16"


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_faster_precisions_stay_close_to_fp32(tiny_model_dir, dtype):
    texts = ["a man is playing a guitar", "dogs run in the park", "how do I reset my password?"] * 3
    reference = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32").encode(texts)
    fast = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype=dtype).encode(texts)
    cosines = np.sum(reference * fast, axis=1)
    assert cosines.min() >= 0.99


def test_atomic_writes_use_normal_permissions(tmp_path):
    import os

    from sfp_rag._utils import atomic_directory, atomic_write_json

    atomic_write_json(tmp_path / "x.json", {"a": 1})
    with atomic_directory(tmp_path / "d") as d:
        (d / "f").write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_default_model_is_the_packaged_adapter(tmp_path, tiny_model_dir, monkeypatch):
    import json

    import sfp_rag.embedding.config as config_module
    from sfp_rag.training.config import TrainConfig
    from sfp_rag.training.trainer import train
    from tests.test_training import SENTENCES

    data = tmp_path / "s.txt"
    data.write_text("\n".join(SENTENCES))
    train(
        TrainConfig(
            data=str(data),
            output_dir=str(tmp_path / "adapter"),
            model=str(tiny_model_dir),
            quantization="none",
            batch_size=8,
            max_steps=3,
            lr=1e-3,
            warmup_steps=0,
            device="cpu",
            dtype="float32",
        ),
        show_progress=False,
    )
    monkeypatch.setattr(config_module, "DEFAULT_MODEL_DIR", tmp_path / "adapter")
    default = SFPEncoder.from_pretrained(device="cpu", dtype="float32")
    assert default.config.adapter == str(tmp_path / "adapter")
    bare = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")
    texts = ["a cat sits", "stocks fell"]
    assert not np.allclose(default.encode(texts), bare.encode(texts), atol=1e-4)
    named = SFPEncoder.from_pretrained("sfp-gemma3-270m", device="cpu", dtype="float32")
    assert named.fingerprint() == default.fingerprint()
    identity = default.identity()
    assert identity["adapter"] == "adapter" and len(identity["adapter_sha256"]) == 16
    assert json.loads((tmp_path / "adapter" / "sfp_config.json").read_text())["encoder"]["template"] == "eol-sum"


def test_packaged_default_model_files():
    import json

    from sfp_rag.embedding.config import CONFIG_NAME, DEFAULT_MODEL_DIR, default_model_dir

    if default_model_dir() is None:
        pytest.skip("this checkout has no packaged default adapter yet")
    config = json.loads((DEFAULT_MODEL_DIR / CONFIG_NAME).read_text())
    assert config["encoder"]["model"] == "gemma3-270m" and config["encoder"]["adapter"] is None
    weights = DEFAULT_MODEL_DIR / "adapter_model.safetensors"
    assert weights.exists() and weights.stat().st_size < 21 * 2**20  # the repository grows by ~20 MB at most
    assert (DEFAULT_MODEL_DIR / "adapter_config.json").exists() and (DEFAULT_MODEL_DIR / "MODEL_CARD.md").exists()
    assert sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir()) < 21 * 2**20  # the whole folder, too
    from sfp_rag.embedding.rotation import load_rotation

    rotation, _ = load_rotation(DEFAULT_MODEL_DIR, 640)  # checked: (640, 640), orthogonal
    assert rotation is not None  # shorter vectors (truncate_dim, dimensions) are cut onto its principal directions


def test_bf16_adapter_loads_through_a_merged_cache(tmp_path, tiny_model_dir, monkeypatch):
    from sfp_rag.training.config import TrainConfig
    from sfp_rag.training.trainer import train
    from tests.test_training import SENTENCES

    monkeypatch.setenv("SFP_RAG_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "s.txt"
    data.write_text("\n".join(SENTENCES))
    train(
        TrainConfig(
            data=str(data),
            output_dir=str(tmp_path / "adapter"),
            model=str(tiny_model_dir),
            quantization="none",
            batch_size=8,
            max_steps=3,
            lr=1e-3,
            warmup_steps=0,
            device="cpu",
            dtype="float32",
        ),
        show_progress=False,
    )
    texts = ["a cat sits", "stocks fell", "how do I reset my password?"]
    reference = SFPEncoder.from_pretrained(str(tmp_path / "adapter"), device="cpu", dtype="float32").encode(texts)
    fast = SFPEncoder.from_pretrained(str(tmp_path / "adapter"), device="cpu", dtype="bfloat16", runtime="torch")
    assert len(list((tmp_path / "cache" / "merged").glob("*/sfp_source.json"))) == 1
    assert next(fast.model.parameters()).dtype.is_floating_point
    again = SFPEncoder.from_pretrained(  # from the cache
        str(tmp_path / "adapter"), device="cpu", dtype="bfloat16", runtime="torch"
    )
    for enc in (fast, again):
        assert np.sum(enc.encode(texts) * reference, axis=1).min() >= 0.99


# --- sentence-transformers compatibility ---------------------------------------------------------------------------


def test_encode_speaks_sentence_transformers(tiny_encoder):
    import torch

    texts = ["A cat sits on the mat.", "Stocks fell sharply."]
    ref = tiny_encoder.encode(texts)
    np.testing.assert_allclose(tiny_encoder.encode(texts, prompt_name="query"), tiny_encoder.encode_queries(texts))
    np.testing.assert_allclose(tiny_encoder.encode_query(texts), tiny_encoder.encode_queries(texts))
    np.testing.assert_allclose(tiny_encoder.encode_document(texts), ref)
    np.testing.assert_allclose(tiny_encoder.encode(texts, prompt_name="passage"), ref)
    as_tensor = tiny_encoder.encode(texts, convert_to_tensor=True)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (2, tiny_encoder.dim)
    as_list = tiny_encoder.encode(texts, convert_to_numpy=False)
    assert isinstance(as_list, list) and len(as_list) == 2 and as_list[0].shape == (tiny_encoder.dim,)
    raw = tiny_encoder.encode(texts, normalize_embeddings=False)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), ref, atol=1e-6)
    assert tiny_encoder.get_sentence_embedding_dimension() == tiny_encoder.dim
    sim = tiny_encoder.similarity(ref, ref)
    assert isinstance(sim, torch.Tensor) and sim.shape == (2, 2)
    np.testing.assert_allclose(sim.numpy(), ref @ ref.T, atol=1e-6)  # brute force: the cosine matrix
    assert tiny_encoder.similarity_fn_name == "cosine" and set(tiny_encoder.prompts) == {"query", "document"}
    # MTEB passes task_name and prompt_type; anything else unknown is an error, not silently absorbed
    np.testing.assert_allclose(tiny_encoder.encode(texts, task_name="STSBenchmark", prompt_type="query"),
                               tiny_encoder.encode_queries(texts))  # fmt: skip
    with pytest.raises(TypeError, match="unexpected keyword"):
        tiny_encoder.encode(texts, output_value="token_embeddings")
    with pytest.raises(ValueError, match="prompt_name must be one of"):
        tiny_encoder.encode(texts, prompt_name="question")


def test_an_explicit_prompt_and_device(tiny_encoder):
    texts = ["A cat sits on the mat."]
    explicit = tiny_encoder.encode(texts, prompt='This sentence : "{text}" means in one word:"')
    assert explicit.shape == (1, tiny_encoder.dim)
    assert not np.allclose(explicit, tiny_encoder.encode(texts))
    np.testing.assert_allclose(tiny_encoder.encode(texts, device="cpu"), tiny_encoder.encode(texts))


def test_an_asymmetric_query_template(tiny_model, bpe_tokenizer):
    question = 'This question : "{text}" is about{rep1}, it can be summarized as'
    sym = SFPEncoder(tiny_model, bpe_tokenizer, EncoderConfig(model="tiny"))
    asym = SFPEncoder(tiny_model, bpe_tokenizer, EncoderConfig(model="tiny", query_template=question))
    texts = ["how do I reset my password?", "dogs run in the park"]
    # documents are unchanged; queries use the query template, exactly as an explicit prompt would
    np.testing.assert_allclose(asym.encode_documents(texts), sym.encode_documents(texts))
    np.testing.assert_allclose(asym.encode_queries(texts), sym.encode(texts, prompt=question), atol=1e-6)
    assert not np.allclose(asym.encode_queries(texts), sym.encode_queries(texts))
    np.testing.assert_allclose(asym.encode(texts), sym.encode(texts))  # no role: the document (symmetric) side
    assert asym.prompts["query"] == question and asym.prompts["document"] == sym.prompts["document"]
    # the identity names the query template (an index must be queried with it); document caches are shared
    assert "query_template" not in sym.identity() and asym.identity()["query_template"] == question
    assert asym.fingerprint() != sym.fingerprint()
    assert asym.document_fingerprint() == sym.document_fingerprint() == sym.fingerprint()  # old caches still match
    same = SFPEncoder(tiny_model, bpe_tokenizer, EncoderConfig(model="tiny", query_template="eol-sum"))
    np.testing.assert_allclose(same.encode_queries(texts), sym.encode_queries(texts))
    with pytest.raises(ValueError, match="unknown template"):
        EncoderConfig(query_template="no-such-preset")


def test_truncate_dim_keeps_the_leading_dimensions_renormalised(tiny_encoder):
    texts = ["A cat sits on the mat.", "Dogs like to walk every day.", "How do I reset my password?"]
    raw = tiny_encoder.encode(texts, normalize_embeddings=False)
    for width in (1, 5, tiny_encoder.dim):
        cut = raw[:, :width]
        expected = cut / np.linalg.norm(cut, axis=1, keepdims=True)
        np.testing.assert_allclose(tiny_encoder.encode(texts, truncate_dim=width), expected, atol=1e-6)
    np.testing.assert_allclose(tiny_encoder.encode(texts, truncate_dim=5, normalize_embeddings=False), raw[:, :5])
    assert tiny_encoder.encode([], truncate_dim=5).shape == (0, 5)
    for bad in (0, tiny_encoder.dim + 1, True, 2.5):
        with pytest.raises(ValueError, match="truncate_dim must be an integer from 1"):
            tiny_encoder.encode(texts, truncate_dim=bad)


def test_a_configured_truncate_dim_is_the_encoders_width_and_identity(tiny_model, bpe_tokenizer, tiny_encoder):
    from sfp_rag.embedding.encoder import SFPEncoder

    short = SFPEncoder(tiny_model, bpe_tokenizer, tiny_encoder.config.replace(truncate_dim=8))
    assert short.dim == 8 and short.encode("a text").shape == (8,)
    np.testing.assert_allclose(short.encode("a text"), tiny_encoder.encode("a text", truncate_dim=8), atol=1e-6)
    assert short.identity()["truncate_dim"] == 8 and "truncate_dim" not in tiny_encoder.identity()
    assert short.fingerprint() != tiny_encoder.fingerprint()  # an index of 8-wide vectors is another index
    with pytest.raises(ValueError, match="truncate_dim must be a positive integer"):
        tiny_encoder.config.replace(truncate_dim=0)
