"""A client for a running ``sfp-rag serve`` (httpx only: importing it loads neither torch nor transformers).

from sfp_rag.client import SFPClient

client = SFPClient("http://127.0.0.1:8000")            # or $SFP_RAG_SERVER
client.search("how do I reset my password?", index="docs", k=3)   # [Hit(0.871 help-center/...), ...]
client.embed(["a text", "another"])                     # float32 (2, d)
"""

from __future__ import annotations

import base64
import os
from typing import Any

from ._utils import check_texts
from .hits import Hit

SERVER_ENV = "SFP_RAG_SERVER"
API_KEY_ENV = "SFP_RAG_API_KEY"


class ServerError(RuntimeError):
    """The server answered with an error (its message is kept) or could not be reached."""


class SFPClient:
    """Talks to ``sfp-rag serve``.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000`` (default: ``$SFP_RAG_SERVER``).
        api_key: sent as ``Authorization: Bearer`` (default: ``$SFP_RAG_API_KEY``).
        timeout: seconds per request.
        batch_size: texts per request of ``embed`` at most (fewer where the server takes fewer; more texts are sent
            in several requests).
    """

    def __init__(
        self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0, batch_size: int = 256
    ) -> None:
        import httpx

        url = url or os.environ.get(SERVER_ENV)
        if not url:
            raise ValueError(f"no server given: pass a URL or set {SERVER_ENV}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the server URL must start with http:// or https://, got {url!r}")
        key = api_key or os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self._limit: int | None = None
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ServerError(
                f"cannot reach the sfp-rag server at {self.url} ({err}); is `sfp-rag serve` running?"
            ) from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise ServerError(f"the server answered {response.status_code}: {message}")
        return response.json()

    def search(
        self,
        query: str | list[str],
        index: str | None = None,
        k: int = 5,
        mode: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Top-``k`` hits for a query (a list of lists for a list of queries): the type ``Index.search`` returns."""
        answers = self.search_json(query, index, k, mode, nprobe, ef_search)
        if isinstance(answers, dict):
            return [Hit.from_dict(h) for h in answers["hits"]]
        return [[Hit.from_dict(h) for h in a["hits"]] for a in answers]

    def search_json(
        self,
        query: str | list[str],
        index: str | None = None,
        k: int = 5,
        mode: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """What ``sfp-rag query --format json`` prints: ``{query, index, mode, score_kind, hits}`` (a list for a
        list of queries)."""
        check_texts(query)  # what a local search would refuse is refused here too, with the same message
        body = {"query": query, "index": index, "k": k, "mode": mode, "nprobe": nprobe, "ef_search": ef_search}
        return self._call("POST", "/search", json=body)

    def embed(self, texts: str | list[str], input_type: str = "document"):
        """Embeddings as float32 numpy rows (``(d,)`` for one string)."""
        import numpy as np

        single = isinstance(texts, str)
        texts = check_texts(texts)  # the local encoder's checks and messages, before anything is sent
        rows = []
        step = self.batch_size
        if len(texts) > 1:  # any number of texts, as in-process: as many requests as the server's limit needs
            step = min(step, self._max_inputs())
        for start in range(0, len(texts), step):
            body = {"input": texts[start : start + step], "encoding_format": "base64", "input_type": input_type}
            data = self._call("POST", "/v1/embeddings", json=body)["data"]
            rows += [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
                     for d in sorted(data, key=lambda d: d["index"])]  # fmt: skip
        out = np.stack(rows).astype(np.float32)
        return out[0] if single else out

    def _max_inputs(self) -> int:
        """The texts per request the server takes (its ``/health`` says; 256 for a server that does not)."""
        if self._limit is None:
            self._limit = int(self.health().get("limits", {}).get("max_inputs", 256))
        return self._limit

    def ask(self, question: str, index: str | None = None, k: int = 3, mode: str = "extract") -> dict[str, Any]:
        """The answer and its numbered sources: ``mode`` ``extract`` (cited sentences of the sources) or
        ``generate`` (the server's LM)."""
        check_texts(question)
        body = {"question": question, "index": index, "k": k, "mode": mode}
        return self._call("POST", "/ask", json=body)

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SFPClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
