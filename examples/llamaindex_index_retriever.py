"""Open a folder built by `sfp-rag index` as a LlamaIndex retriever, and use it in a query pipeline.

sfp-rag index examples/docs                       # as in the README: dense vectors + BM25 (hybrid) by default
python examples/llamaindex_index_retriever.py "why do corals bleach?"            # the index's default: hybrid
python examples/llamaindex_index_retriever.py --dense "why do corals bleach?"    # the dense vectors alone
"""

from __future__ import annotations

import sys

from sfp_rag import SFPIndexRetriever


def main(question: str, mode: str | None) -> None:
    # The index remembers which encoder built it; the retriever rebuilds that encoder.
    retriever = SFPIndexRetriever("docs", similarity_top_k=3, mode=mode)
    for rank, hit in enumerate(retriever.retrieve(question), start=1):
        print(f"{rank}. [{hit.score:.4f}] {hit.node.metadata['source']}: {' '.join(hit.node.text.split())[:120]}...")
    # retriever.retrieve() returns NodeWithScore objects, so it plugs into RetrieverQueryEngine with any LLM:
    #   from llama_index.core.query_engine import RetrieverQueryEngine
    #   engine = RetrieverQueryEngine.from_args(retriever, llm=your_llm)


if __name__ == "__main__":
    args = sys.argv[1:]
    mode = "dense" if "--dense" in args else None  # None: the index's default (hybrid where it has BM25)
    main(" ".join(a for a in args if a != "--dense") or "why do corals bleach?", mode)
