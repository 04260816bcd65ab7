"""Principal-direction rotations for shorter vectors: fitted, saved, checked when loaded, and applied exactly where
encode cuts vectors (never at full width)."""

from __future__ import annotations

import numpy as np
import pytest

from sfp_rag.embedding.rotation import ROTATION_NAME, fit_rotation, load_rotation, save_rotation

TEXTS = ["A cat sits on the mat.", "Dogs like to walk every day.", "How do I reset my password?",
         "Photosynthesis converts light into chemical energy.", "The train leaves at noon."]  # fmt: skip


def test_fit_rotation_is_orthogonal_and_orders_directions_by_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * np.array([0.1, 5.0, 1.0, 3.0, 0.5, 2.0])  # variance by column, shuffled
    r = fit_rotation(x)
    np.testing.assert_allclose(r.T @ r, np.eye(6), atol=1e-5)
    variances = ((x - x.mean(0)) @ r).var(axis=0)
    assert list(variances) == sorted(variances, reverse=True)
    assert np.argmax(np.abs(r[:, 0])) == 1  # the widest column is the first direction
    with pytest.raises(ValueError, match="at least 6 vectors"):
        fit_rotation(x[:5])


def test_save_and_load_check_what_they_read(tmp_path):
    r = fit_rotation(np.random.default_rng(1).normal(size=(50, 4)))
    save_rotation(tmp_path, r)
    loaded, digest = load_rotation(tmp_path, 4)
    np.testing.assert_array_equal(loaded, r)
    assert len(digest) == 16
    assert load_rotation(tmp_path / "none", 4) == (None, None) and load_rotation(None, 4) == (None, None)
    with pytest.raises(ValueError, match=r"must be a \(8, 8\) matrix"):
        load_rotation(tmp_path, 8)
    np.save(tmp_path / ROTATION_NAME, np.ones((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="not orthogonal"):
        load_rotation(tmp_path, 4)
    np.save(tmp_path / ROTATION_NAME, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="is not a numpy matrix"):
        load_rotation(tmp_path, 4)  # never unpickled


@pytest.fixture
def rotated(tmp_path, tiny_model, bpe_tokenizer, tiny_encoder):
    """The tiny encoder with a rotation.npy in its (otherwise empty) model folder, and the rotation."""
    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.embedding.rotation import fit_model_rotation

    rotation = fit_model_rotation(tiny_encoder, TEXTS * 10)
    save_rotation(tmp_path, rotation)
    return SFPEncoder(tiny_model, bpe_tokenizer, tiny_encoder.config.replace(adapter=str(tmp_path))), rotation


def test_encode_cuts_onto_the_principal_directions_and_leaves_full_width_alone(rotated, tiny_encoder):
    encoder, rotation = rotated
    raw = tiny_encoder.encode(TEXTS, normalize_embeddings=False)
    np.testing.assert_allclose(encoder.encode(TEXTS), tiny_encoder.encode(TEXTS), atol=1e-6)  # full width: as is
    for width in (1, 4, 16):
        cut = raw @ rotation[:, :width]
        expected = cut / np.linalg.norm(cut, axis=1, keepdims=True)
        np.testing.assert_allclose(encoder.encode(TEXTS, truncate_dim=width), expected, atol=1e-5)
        np.testing.assert_allclose(encoder.truncate_vectors(encoder.encode(TEXTS), width), expected, atol=1e-5)
    unnormalized = encoder.encode(TEXTS, truncate_dim=4, normalize_embeddings=False)
    np.testing.assert_allclose(unnormalized, raw @ rotation[:, :4], atol=1e-5)


def test_a_rotated_width_is_part_of_the_identity(rotated, tiny_encoder, bpe_tokenizer, tiny_model):
    from sfp_rag.embedding.encoder import SFPEncoder

    encoder, _ = rotated
    short = SFPEncoder(tiny_model, bpe_tokenizer, encoder.config.replace(truncate_dim=8))
    plain = SFPEncoder(tiny_model, bpe_tokenizer, tiny_encoder.config.replace(truncate_dim=8))
    assert "rotation_sha256" in short.identity() and "rotation_sha256" not in plain.identity()
    assert short.fingerprint() != plain.fingerprint()
    assert "rotation_sha256" not in encoder.identity()  # full width: the rotation changes nothing
    assert short.document_fingerprint(full_width=True) == encoder.document_fingerprint()


def test_the_rotation_command_fits_a_trained_model_folder(tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    from sfp_rag.cli import main
    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.training.config import TrainConfig
    from sfp_rag.training.trainer import train

    data = tmp_path / "texts.txt"
    data.write_text("\n".join(f"{t} Number {i} of the list." for i in range(8) for t in TEXTS) + "\n")
    out = tmp_path / "run"
    train(TrainConfig(data=str(data), output_dir=str(out), model=str(tiny_model_dir), quantization="none",
                      batch_size=4, max_steps=1, device="cpu", dtype="float32"), show_progress=False)  # fmt: skip
    result = CliRunner().invoke(main, ["rotation", str(out), "--data", str(data), "--texts", "40"])
    assert result.exit_code == 0, result.output
    assert (out / ROTATION_NAME).is_file() and "from 40 texts" in result.output
    encoder = SFPEncoder.from_pretrained(str(out), device="cpu", dtype="float32", runtime="torch")
    assert encoder.rotation is not None and encoder.encode("a text", truncate_dim=4).shape == (4,)
    few = CliRunner().invoke(main, ["rotation", str(out), "--data", str(data), "--texts", "10"])
    assert few.exit_code == 2 and "needs at least that many" in few.output
    bare = CliRunner().invoke(main, ["rotation", str(tmp_path), "--data", str(data)])
    assert bare.exit_code == 2 and "holds no trained adapter" in bare.output
