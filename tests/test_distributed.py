"""The Ray engine: a local Ray with the tiny in-process model, against the in-process path."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ray")

from sfp_rag.retrieval.builder import build_index  # noqa: E402
from sfp_rag.retrieval.index_folder import Collection  # noqa: E402
from tests.test_pipeline import write_docs  # noqa: E402


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    from sfp_rag.embedding.encoder import SFPEncoder

    return SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def ray_embedder(encoder):
    from sfp_rag.distributed.ray_engine import RayEmbedder

    embedder = RayEmbedder(encoder, workers=2, batch_size=4)
    yield embedder
    embedder.close()


def test_ray_index_equals_the_in_process_index(tmp_path, encoder, ray_embedder):
    docs = write_docs(tmp_path / "docs")
    opts = dict(chunk_size=64, chunk_overlap=8, show_progress=False)
    local = build_index(docs, encoder, tmp_path / "local", **opts)
    ray = build_index(docs, encoder, tmp_path / "ray", embedder=ray_embedder, **opts)
    assert (ray.files, ray.chunks, ray.embedded) == (local.files, local.chunks, local.embedded)
    a, b = Collection.open(tmp_path / "local"), Collection.open(tmp_path / "ray")
    cos = np.sum(a.vectors() * b.vectors(), axis=1)
    assert cos.min() >= 0.999
    assert (tmp_path / "local" / "docstore.jsonl").read_bytes() == (tmp_path / "ray" / "docstore.jsonl").read_bytes()
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("local", "ray"))
    assert ma["fingerprint"] == mb["fingerprint"]
    # incremental semantics are the same: unchanged files are not embedded again, changed ones are
    (docs / "pets" / "cats.txt").write_text("Cats purr. They nap in the sun all afternoon long.")
    again = build_index(docs, encoder, tmp_path / "ray", embedder=ray_embedder, **opts)
    assert again.changed == ["pets/cats.txt"] and again.embedded == 1 and again.reused == ray.chunks - 1


def test_ray_embedder_keeps_the_order_of_many_texts(encoder, ray_embedder):
    texts = [f"text number {i} of a longer list" for i in range(37)]
    np.testing.assert_allclose(ray_embedder(texts), encoder.encode_documents(texts), atol=1e-5)
    assert ray_embedder([]).shape == (0, encoder.dim)


def test_ray_reads_and_chunks_like_the_in_process_path(tmp_path, encoder, ray_embedder):
    from sfp_rag.retrieval.builder import folder_sources
    from sfp_rag.retrieval.chunking import chunk_sources, make_splitter
    from sfp_rag.retrieval.documents import scan_folder

    docs = write_docs(tmp_path / "docs")
    (docs / "empty.txt").write_text("   \n")
    (docs / "blob.bin.txt").write_bytes(b"\x00\x01\x02binary\x00" * 20)
    (docs / "long.md").write_text(" ".join(f"Sentence number {i} is about topic {i % 7}." for i in range(80)))
    sources = folder_sources(scan_folder(docs))
    splitter = make_splitter(lambda s: encoder.tokenizer.encode(s, add_special_tokens=False), 64, 8)
    local = chunk_sources(sources, splitter)
    on_ray = ray_embedder.chunk_sources(sources, 64, 8)
    assert on_ray == local  # the same chunks (text, spans, order) and the same skip reasons
    assert isinstance(local["empty.txt"], str) and isinstance(local["blob.bin.txt"], str)
    assert len(local["long.md"]) > 3
    assert ray_embedder.chunk_sources([], 64, 8) == {}


def test_a_ray_address_where_no_cluster_answers_fails_in_bounded_time(tmp_path, tiny_model_dir, monkeypatch):
    """Ray's own connect retries for ever without a word: a closed port fails at once, a port that accepts but is
    not Ray fails at $SFP_RAG_RAY_TIMEOUT, each naming the address and the way forward, before the model loads."""
    import socket
    import time

    from click.testing import CliRunner

    from sfp_rag.cli import main

    docs = write_docs(tmp_path / "docs")
    monkeypatch.setenv("SFP_RAG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SFP_RAG_RAY_TIMEOUT", "4")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening: connection refused
        started = time.monotonic()
        result = CliRunner().invoke(main, ["index", str(docs), "--engine", "ray", "--ray-address", dead])
    assert result.exit_code == 1 and time.monotonic() - started < 10
    assert f"no Ray cluster at {dead}" in result.output and "leave out --ray-address" in result.output
    with socket.socket() as mute:  # accepts connections and never says a word
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        address = f"127.0.0.1:{mute.getsockname()[1]}"
        started = time.monotonic()
        result = CliRunner().invoke(
            main, ["index", str(docs), "--model", str(tiny_model_dir), "--engine", "ray", "--ray-address", address]
        )
        took = time.monotonic() - started
    assert result.exit_code == 1 and 4 <= took < 30, (took, result.output)
    assert f"no Ray cluster answered at {address} within 4 s" in result.output
    assert not (tmp_path / "home").exists()  # nothing was built
