"""Retrieval over an encoder's vectors: documents in, ranked passages out.

``documents`` finds and reads files (skipping what cannot be read, with reasons); ``chunking`` splits text with the
encoder's tokenizer; ``vector_store`` keeps resumable shards of vectors while a build runs; ``faiss_index`` wraps
FAISS; ``bm25`` the keyword index; ``fusion`` combines the two; ``index_folder`` is the on-disk index format
(manifest, docstore, files, where indexes live); ``builder`` has ``build_index`` and ``searcher`` has ``Searcher``.
It may import ``embedding`` only.
"""

from __future__ import annotations
