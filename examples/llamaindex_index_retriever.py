"""Open a folder built by `sfp-rag index` as a LlamaIndex retriever, and use it in a query pipeline.

    sfp-rag index examples/docs --name docs --hybrid
    python examples/llamaindex_index_retriever.py "why do corals bleach?"
"""

from __future__ import annotations

import sys

from sfp_rag.llamaindex import SFPIndexRetriever


def main(question: str) -> None:
    # The index remembers which encoder built it; the retriever rebuilds that encoder.
    retriever = SFPIndexRetriever("docs", similarity_top_k=3, mode="hybrid")
    for rank, hit in enumerate(retriever.retrieve(question), start=1):
        print(f"{rank}. [{hit.score:.4f}] {hit.node.metadata['source']}: {' '.join(hit.node.text.split())[:120]}...")
    # retriever.retrieve() returns NodeWithScore objects, so it plugs into RetrieverQueryEngine with any LLM:
    #   from llama_index.core.query_engine import RetrieverQueryEngine
    #   engine = RetrieverQueryEngine.from_args(retriever, llm=your_llm)


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "why do corals bleach?")
