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


def test_pickling_carries_settings_not_weights(tiny_model_dir):
    import pickle

    emb = SFPEmbedding(model=str(tiny_model_dir), device="cpu", dtype="float32")
    blob = pickle.dumps(emb)
    assert len(blob) < 20_000  # the tiny model's weights alone are ~100 kB; the default model's 564 MB
    clone = pickle.loads(blob)
    assert clone.model == str(tiny_model_dir) and clone._encoder is None
    np.testing.assert_allclose(clone.get_query_embedding("a cat"), emb.get_query_embedding("a cat"), atol=1e-6)
    assert str(tiny_model_dir) not in emb.model_name and emb.model_name == f"sfp:{tiny_model_dir.name}"


@pytest.fixture
def kb(tmp_path, tiny_model_dir):
    from sfp_rag import Index
    from sfp_rag.embedding.encoder import SFPEncoder
    from tests.test_pipeline import write_docs

    encoder = SFPEncoder.from_pretrained(str(tiny_model_dir), device="cpu")
    index = Index.create(tmp_path / "kb", docs=write_docs(tmp_path / "docs"), encoder=encoder, chunk_size=64,
                         hybrid=True, show_progress=False)  # fmt: skip
    index.add(["Memo: the office is closed on Fridays."], ids=["memo-1"], metadata=[{"kind": "memo", "year": 2026}])
    return tmp_path


def test_retriever_metadata_follows_llamaindex_conventions(kb):
    retriever = SFPIndexRetriever(str(kb / "kb"), similarity_top_k=3, mode="dense")
    node = retriever.retrieve("Cats sleep for most of the day. A cat purrs when it is content.")[0]
    meta = node.node.metadata
    assert meta["file_name"] == "cats.txt" and meta["file_type"] == ".txt"
    assert meta["file_path"] == str((kb / "docs" / "pets" / "cats.txt").resolve())
    memo = SFPIndexRetriever(str(kb / "kb"), similarity_top_k=1, mode="dense").retrieve("office closed Fridays")[0]
    assert memo.node.metadata["kind"] == "memo" and memo.node.metadata["source"] == "memo-1"


def test_retriever_filters_by_glob_type_and_metadata(kb):
    from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

    query = "Cats sleep for most of the day."
    md = SFPIndexRetriever(str(kb / "kb"), similarity_top_k=5, file_types=["md"]).retrieve(query)
    assert md and {n.node.metadata["file_type"] for n in md} == {".md"}
    pets = SFPIndexRetriever(str(kb / "kb"), similarity_top_k=5, path_glob="pets/*").retrieve(query)
    assert pets and all(n.node.metadata["source"].startswith("pets/") for n in pets)
    memos = SFPIndexRetriever(
        str(kb / "kb"),
        similarity_top_k=5,
        filters=MetadataFilters(filters=[MetadataFilter(key="year", value=2025, operator=FilterOperator.GT)]),
    ).retrieve(query)
    assert [n.node.metadata["source"] for n in memos] == ["memo-1"]
    # brute-force reference: the filtered list is the unfiltered ranking with the others taken out
    everything = SFPIndexRetriever(str(kb / "kb"), similarity_top_k=100).retrieve(query)
    assert [n.node.node_id for n in pets] == [
        n.node.node_id for n in everything if n.node.metadata["source"].startswith("pets/")
    ][:5]


def test_retriever_async_mode_check_and_similarity_cutoff(kb):
    from llama_index.core.postprocessor import SimilarityPostprocessor

    with pytest.raises(ValueError, match="mode must be one of"):
        SFPIndexRetriever(str(kb / "kb"), mode="semantic")
    retriever = SFPIndexRetriever(str(kb / "kb"), similarity_top_k=4, mode="dense")
    nodes = asyncio.run(retriever.aretrieve("Dogs need a walk every day."))
    assert len(nodes) == 4 and all(-1.0 <= n.score <= 1.0 for n in nodes)
    cut = SimilarityPostprocessor(similarity_cutoff=nodes[1].score).postprocess_nodes(nodes)
    assert [n.node.node_id for n in cut] == [n.node.node_id for n in nodes[:2]]
