"""The HTTP routes of ``sfp-rag serve`` (FastAPI).

- ``POST /v1/embeddings``: OpenAI-compatible (``input`` str or list, ``model``, ``encoding_format`` float|base64,
  ``dimensions``; answer ``data[i].embedding``/``index``, ``usage``), so OpenAI clients and LlamaIndex/LangChain
  OpenAI-compatible embedding classes work unchanged. ``input_type`` ("query"/"document") picks the prompt role.
- ``POST /search``: ``index``, ``query`` (str or list), ``k``, ``mode`` (or ``hybrid: true``); the answer is what
  ``sfp-rag query --format json`` prints.
- ``POST /ask``: retrieve, then answer: the sources' best sentences (``mode: extract``, the default) or a local LM's
  answer (``mode: generate``), citing [1], [2] mapped to source files.
- ``GET /health``, ``GET /indexes``, ``GET /metrics`` (Prometheus text: requests, latency, batch sizes, queue).

Every error is JSON ``{"error": {"message", "type", "code"}}`` with the status that fits: 401 (API key), 404 (index),
409 (an index this server cannot serve, with the reason), 413 (too many inputs), 422 (malformed request, text that
is not valid Unicode), 503 (queue full; ``Retry-After``). A malformed request never takes the server down. A text
longer than ``max_chars`` is cut to it, as the in-process path reads only its first 512 tokens.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..embedding.config import display_name
from ..retrieval.index_folder import SCORE_KINDS
from ..retrieval.searcher import default_mode
from .batching import MicroBatcher, QueueFull
from .config import ServeConfig
from .registry import IndexRegistry, UnknownIndex

logger = logging.getLogger(__name__)


# --- requests -------------------------------------------------------------------------------------------------


class _Request(BaseModel):
    """Every request body: a string anywhere in it must be valid Unicode (JSON allows a lone surrogate such as
    "\\ud800", which no UTF-8 answer can carry), so such a request is a 422 that names the field, never a 500."""

    @field_validator("*", mode="after")
    @classmethod
    def _valid_text(cls, value: Any) -> Any:
        for i, text in enumerate([value] if isinstance(value, str) else value if isinstance(value, list) else []):
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as err:
                    where = f"item {i} " if isinstance(value, list) else ""
                    raise ValueError(
                        f"{where}is not valid text: it holds the lone surrogate U+{ord(text[err.start]):04X} at "
                        f"position {err.start}; send text encoded as UTF-8"
                    ) from None
        return value


class EmbeddingsRequest(_Request):
    input: str | list[str] = Field(description="a text or a list of texts (token-id inputs are not supported)")
    model: str | None = Field(default=None, description="accepted for compatibility; the server has one model")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        default=None, description="keep the first N dimensions of each vector, renormalised (1 to the model's width)"
    )
    user: str | None = None
    input_type: Literal["query", "document"] = Field(default="document", description="the prompt role")


class SearchRequest(_Request):
    query: str | list[str]
    index: str | None = Field(default=None, description="an index name; None: the only one served")
    k: int = 5
    mode: Literal["dense", "hybrid", "bm25"] | None = None
    hybrid: bool | None = Field(default=None, description="true: mode hybrid (as `sfp-rag query --hybrid`)")
    nprobe: int | None = Field(default=None, description="IVF lists to visit (IVF indexes)")
    ef_search: int | None = Field(default=None, description="HNSW beam width (HNSW indexes)")


class AskRequest(_Request):
    question: str
    index: str | None = None
    k: int = 3
    mode: Literal["extract", "generate"] = "extract"  # sentences of the sources (cited), or an LM's answer


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


# --- metrics --------------------------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics in a registry of their own (several apps in one process do not collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sfp_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "sfp_request_seconds",
            "request latency by route",
            ["route"],
            buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "sfp_batch_texts",
            "texts per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_seconds = Histogram("sfp_batch_seconds", "seconds per forward pass", registry=self.registry)
        self.queue = Gauge("sfp_queue_texts", "texts waiting to be encoded", registry=self.registry)

    def batch(self, texts: int, tokens: int, seconds: float) -> None:
        self.batch_size.observe(texts)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# --- the app --------------------------------------------------------------------------------------------------


def create_app(
    config: ServeConfig,
    encoder,
    registry: IndexRegistry | None = None,
    answer: Callable[..., dict[str, Any]] | None = None,
) -> FastAPI:
    """The FastAPI app over a loaded ``encoder``; ``answer(question, searcher, k, mode)`` serves /ask (None:
    extractive answers only, and a 503 for ``mode: generate``)."""
    registry = registry if registry is not None else IndexRegistry(config.indexes, encoder)
    metrics = Metrics()
    model_name = display_name(encoder.config)
    prompt_tokens = encoder.prompt_tokenizer

    def count_tokens(text: str) -> int:
        return len(prompt_tokens.tokenize([text])[0].input_ids)

    def encode(texts: list[str], role: str) -> np.ndarray:
        fn = encoder.encode_queries if role == "query" else encoder.encode_documents
        return fn(texts, batch_size=config.max_batch_size, max_batch_tokens=config.max_batch_tokens,
                  show_progress_bar=False)  # fmt: skip

    batcher = MicroBatcher(
        encode,
        count_tokens,
        max_batch_tokens=config.max_batch_tokens,
        max_batch_size=config.max_batch_size,
        max_wait_ms=config.max_wait_ms,
        max_queue=config.max_queue,
        on_batch=metrics.batch,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="sfp-rag", version=_version(), lifespan=lifespan)
    app.state.batcher, app.state.registry, app.state.metrics = batcher, registry, metrics

    # --- cross-cutting: auth, metrics, errors ----------------------------------------------------------------

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        route = request.url.path if request.url.path in _ROUTES else "other"
        if config.api_key is not None:
            given = request.headers.get("authorization", "")
            expected = f"Bearer {config.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                response = _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "auth_error")
                metrics.requests.labels(route, "401").inc()
                return response
        try:
            response = await call_next(request)
        except Exception:  # a bug in a route: an answer, not a dead server
            logger.exception("unhandled error on %s", request.url.path)
            response = _error(500, "internal error (see the server log)", "server_error")
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        metrics.queue.set(batcher.waiting)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return _error(err.status, err.message, err.kind, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()[:5]
        )
        return _error(422, f"malformed request: {problems}", "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail), "invalid_request_error")

    # --- routes ----------------------------------------------------------------------------------------------

    async def embed(texts: list[str], role: str, counts: list[int] | None = None) -> np.ndarray:
        try:
            return await batcher.submit(texts, role, counts)
        except QueueFull as err:
            raise ApiError(503, f"server busy: {err}", "overloaded", {"Retry-After": "1"}) from None

    def check_texts(texts: list[str], what: str) -> list[str]:
        """The request's texts, checked as the local path checks them, each cut to ``max_chars`` characters: the
        model reads at most the first 512 tokens of a text (as in-process), far fewer than that many characters."""
        if not texts:
            raise ApiError(422, f"{what} is empty; give at least one text")
        if len(texts) > config.max_inputs:
            raise ApiError(413, f"{len(texts)} {what}s in one request; at most {config.max_inputs} (split it up)")
        for i, t in enumerate(texts):  # (text that is not valid Unicode was refused with the request: _Request)
            if what in ("query", "question") and not t.strip():
                raise ApiError(422, f"{what}[{i}] is empty; give some text to search for")
        return [t[: config.max_chars] for t in texts]

    def open_index(name: str | None):
        """The searcher of a served index: 404 for a name it does not serve, 409 with the reason for one it cannot
        (damaged, or built by another encoder), never a 500."""
        try:
            return registry.get(name)
        except UnknownIndex as err:
            raise ApiError(404, str(err.args[0]), "not_found") from None
        except (ValueError, OSError) as err:
            raise ApiError(409, str(err), "index_error") from None

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest) -> dict[str, Any]:
        texts = check_texts([body.input] if isinstance(body.input, str) else body.input, "input")
        if body.dimensions is not None and not 1 <= body.dimensions <= encoder.dim:
            raise ApiError(422, f"dimensions must be from 1 to the model's width {encoder.dim}, got {body.dimensions}")
        counts = [count_tokens(t) for t in texts]  # tokenized once: for the batch budget and for usage
        vectors = await embed(texts, body.input_type, counts)
        if body.dimensions is not None:  # as encode(truncate_dim=N) gives them (rotated where the model has one)
            vectors = encoder.truncate_vectors(vectors, body.dimensions)
        tokens = sum(counts)

        def encoded(v: np.ndarray):
            if body.encoding_format == "base64":
                return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")
            return v.tolist()

        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)],
            "model": body.model or model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.post("/search")
    async def search(body: SearchRequest):
        queries = check_texts([body.query] if isinstance(body.query, str) else body.query, "query")
        if not 1 <= body.k <= config.max_k:
            raise ApiError(422, f"k must be in 1..{config.max_k}, got {body.k}")
        name, searcher = open_index(body.index)
        mode = "hybrid" if body.hybrid else body.mode or default_mode(searcher.collection)
        params = {n: v for n, v in {"nprobe": body.nprobe, "efSearch": body.ef_search}.items() if v is not None}
        vectors = await embed(queries, "query") if mode != "bm25" else None
        try:
            results = await asyncio.to_thread(
                searcher.search, queries, body.k, mode, vectors=vectors, search_params=params or None
            )
        except ValueError as err:
            raise ApiError(422, str(err)) from None
        answers = [
            {
                "query": q,
                "index": name,
                "mode": mode,
                "score_kind": SCORE_KINDS[mode],
                "hits": [h.to_dict() for h in hs],
            }
            for q, hs in zip(queries, results)
        ]
        return answers[0] if isinstance(body.query, str) else answers

    @app.post("/ask")
    async def ask(body: AskRequest):
        (question,) = check_texts([body.question], "question")
        if not 1 <= body.k <= min(config.max_k, 20):
            raise ApiError(422, f"k must be in 1..{min(config.max_k, 20)}, got {body.k}")
        name, searcher = open_index(body.index)
        if answer is not None:
            return await asyncio.to_thread(answer, question, searcher, body.k, body.mode)
        if body.mode == "generate":
            raise ApiError(503, "this server has no answering model (start it with --llm)", "unavailable")
        from ..integrations.extractive import extract_answer  # needs no language model

        return await asyncio.to_thread(extract_answer, question, searcher, body.k)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        served, unavailable = await asyncio.to_thread(registry.check_all)
        return {
            "status": "ok" if not unavailable else "degraded",
            "model": model_name,
            "dim": encoder.dim,
            "runtime": getattr(encoder, "runtime", None),  # what runs the model (torch or OpenVINO, precision)
            "indexes": served,
            "unavailable": unavailable,  # name -> why it cannot be served (answered with 409)
            "limits": {"max_inputs": config.max_inputs, "max_chars": config.max_chars, "max_k": config.max_k},
        }

    @app.get("/indexes")
    async def indexes() -> list[dict[str, Any]]:
        from ..retrieval.index import describe

        out = []
        for name in registry.names():
            try:
                out.append({**describe(registry.path(name)[1]), "name": name})
            except (UnknownIndex, ValueError, OSError) as err:
                out.append({"name": name, "error": str(err)})
        return out

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        metrics.queue.set(batcher.waiting)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


_ROUTES = ("/v1/embeddings", "/search", "/ask", "/health", "/indexes", "/metrics")


def _error(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sfp-rag")
    except metadata.PackageNotFoundError:
        return "0"
