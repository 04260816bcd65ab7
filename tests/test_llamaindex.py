from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402

from sfp_rag.integrations.llamaindex import SFPEmbedding, SFPIndexRetriever  # noqa: E402


@pytest.fixture
def embedding(tiny_encoder):
    return SFPEmbedding(encoder=tiny_encoder, embed_batch_size=4)


def test_is_a_base_embedding_and_returns_float_lists(embedding, tiny_encoder):
    assert BaseEmbedding in type(embedding).__mro__
    assert SFPEmbedding.class_name() == "SFPEmbedding"
    q = embedding.get_query_embedding("a cat")
    assert isinstance(q, list) and len(q) == tiny_encoder.dim and all(isinstance(x, float) for x in q)
    np.testing.assert_allclose(q, tiny_encoder.encode_queries("a cat"), atol=1e-6)
    batch = embedding.get_text_embedding_batch(["a", "b", "c", "d", "e"])
    np.testing.assert_allclose(batch, tiny_encoder.encode(["a", "b", "c", "d", "e"]), atol=1e-5)
    assert len(asyncio.run(embedding.aget_query_embedding("x"))) == tiny_encoder.dim
    assert len(asyncio.run(embedding.aget_text_embedding_batch(["x", "y"]))) == 2


def test_fields_have_descriptions_and_validate(embedding):
    fields = type(embedding).model_fields
    for name in ("model", "adapter", "template", "pooling", "device", "dtype", "max_text_tokens", "embed_batch_size"):
        assert fields[name].description
    with pytest.raises(ValueError):
        SFPEmbedding(encoder=embedding.encoder, embed_batch_size=0)


def test_works_inside_vector_store_index(embedding):
    docs = [Document(text=t) for t in ["cats purr and sleep", "stock markets fell", "dogs need walks"]]
    index = VectorStoreIndex.from_documents(docs, embed_model=embedding)
    nodes = index.as_retriever(similarity_top_k=2).retrieve("cats purr and sleep")
    assert len(nodes) == 2 and nodes[0].node.get_content() == "cats purr and sleep"


def test_model_settings_build_an_encoder(tiny_model_dir):
    emb = SFPEmbedding(model=str(tiny_model_dir), device="cpu", template="eol", pooling="rep1")
    assert emb.encoder.config.template == "eol" and emb.encoder.config.pooling == "rep1"
    assert "sfp:" in emb.model_name


def test_index_folder_as_a_retriever(tmp_path, tiny_model_dir):
    from sfp_rag.embedding.encoder import SFPEncoder
    from sfp_rag.retrieval.builder import build_index
    from tests.test_pipeline import write_docs

    encoder = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu")
    build_index(write_docs(tmp_path / "docs"), encoder, tmp_path / "kb", chunk_size=64, show_progress=False)
    retriever = SFPIndexRetriever(str(tmp_path / "kb"), similarity_top_k=2)
    nodes = retriever.retrieve("Cats sleep for most of the day. A cat purrs when it is content.")
    assert len(nodes) == 2 and nodes[0].node.metadata["source"] == "pets/cats.txt"
    assert nodes[0].score >= nodes[1].score
