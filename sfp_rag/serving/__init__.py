"""A long-lived retrieval service: ``sfp-rag serve`` (FastAPI + uvicorn, the ``serve`` extra).

``config`` holds the validated ``ServeConfig``; ``batching`` the micro-batcher that encodes concurrent requests in
one forward pass (token-bounded, with a bounded queue); ``registry`` the served indexes, reloaded when a build
replaces them on disk; ``app`` the HTTP routes (OpenAI-compatible ``/v1/embeddings``, ``/search``, ``/ask``,
``/health``, ``/indexes``, ``/metrics``); ``server`` loads the model, warms it and runs uvicorn. The client of a
running server is ``sfp_rag.client`` (httpx only, no torch), at the bottom of the layers so that anyone may use it.
This package may import every layer below it (``embedding``, ``retrieval``, ``integrations`` for answering); only
the CLI imports it.
"""

from __future__ import annotations
