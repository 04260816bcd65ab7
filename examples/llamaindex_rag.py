"""A LlamaIndex VectorStoreIndex over examples/docs, embedded by SFPEmbedding and stored in a FAISS vector store.

pip install -e ".[examples]"      # llama-index-vector-stores-faiss
python examples/llamaindex_rag.py "how do I reset my password?"
"""

from __future__ import annotations

import sys
from pathlib import Path

import faiss
from llama_index.core import Settings, SimpleDirectoryReader, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter

try:
    from llama_index.vector_stores.faiss import FaissVectorStore
except ImportError:
    sys.exit('this example needs the LlamaIndex FAISS vector store: pip install -e ".[examples]"')

from sfp_rag import SFPEmbedding

DOCS = Path(__file__).parent / "docs"


def main(question: str) -> None:
    Settings.embed_model = SFPEmbedding()  # the default model, offline
    Settings.llm = None  # retrieval only: no LLM needed for this example
    Settings.node_parser = SentenceSplitter(chunk_size=256, chunk_overlap=32)

    documents = SimpleDirectoryReader(str(DOCS), recursive=True).load_data()
    dim = Settings.embed_model.encoder.dim
    vector_store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(dim))  # inner product on normalised vectors
    storage = StorageContext.from_defaults(vector_store=vector_store)
    index = VectorStoreIndex.from_documents(documents, storage_context=storage)

    for rank, hit in enumerate(index.as_retriever(similarity_top_k=3).retrieve(question), start=1):
        source = Path(hit.node.metadata.get("file_path", "?")).relative_to(DOCS.resolve())
        print(f"{rank}. [{hit.score:.3f}] {source}: {' '.join(hit.node.get_content().split())[:120]}...")


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "how do I reset my password?")
