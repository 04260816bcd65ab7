"""Adapters to other ecosystems: LlamaIndex (``llamaindex``: ``SFPEmbedding``, ``SFPIndexRetriever``).

Each module imports its ecosystem at the top, so import it only where that package is installed. It may import
``embedding`` and ``retrieval``; nothing imports it but the CLI and the package facade.
"""

from __future__ import annotations
