"""Server-side micro-batching: texts from concurrent requests are encoded together in one forward pass.

A request's texts join a queue; one worker takes the oldest waiting requests (a lone request at once; with others
queued, waiting up to ``max_wait_ms`` for more while the batch is not full), and encodes them in one call bounded by
``max_batch_tokens`` padded tokens and ``max_batch_size`` texts (as text-embeddings-inference's
``--max-batch-tokens``). The model runs in one worker thread, so the event loop keeps accepting requests meanwhile.
At most ``max_queue`` texts wait; more is refused at once (``QueueFull``: the server answers 503), never queued
without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More texts are waiting than the server accepts; retry later."""


@dataclass
class _Request:
    texts: list[str]
    role: str
    tokens: int
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Encode texts from many coroutines in shared batches.

    Args:
        encode: ``encode(texts, role) -> (n, d) float32`` (role: "query" or "document"); runs in a worker thread.
        count_tokens: tokens one text costs in a batch (prompt included).
        on_batch: called with (texts, tokens, seconds) after every forward pass (metrics).
    """

    def __init__(
        self,
        encode: Callable[[list[str], str], np.ndarray],
        count_tokens: Callable[[str], int],
        max_batch_tokens: int = 16384,
        max_batch_size: int = 64,
        max_wait_ms: float = 4.0,
        max_queue: int = 1024,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.encode = encode
        self.count_tokens = count_tokens
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.waiting = 0  # texts queued and not yet encoded
        self._queue: deque[_Request] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sfp-encode")

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def submit(self, texts: list[str], role: str = "document", counts: list[int] | None = None) -> np.ndarray:
        """The embeddings of ``texts`` (raises ``QueueFull`` at once when the queue is full); ``counts`` are their
        token counts when the caller has them already."""
        if self.waiting + len(texts) > self.max_queue:
            raise QueueFull(f"{self.waiting} texts are waiting (at most {self.max_queue}); retry shortly")
        counts = counts if counts is not None else [self.count_tokens(t) for t in texts]
        tokens = sum(min(c, self.max_batch_tokens) for c in counts)
        request = _Request(list(texts), role, tokens, asyncio.get_running_loop().create_future())
        self.waiting += len(texts)
        self._queue.append(request)
        self._wake.set()
        return await request.future

    def _take(self) -> list[_Request]:
        """The oldest requests of the first one's role that fit one batch (the first always goes)."""
        first = self._queue.popleft()
        batch, tokens, size = [first], first.tokens, len(first.texts)
        for request in list(self._queue):
            if request.role != first.role:
                continue
            if tokens + request.tokens > self.max_batch_tokens or size + len(request.texts) > self.max_batch_size:
                break
            self._queue.remove(request)
            batch.append(request)
            tokens, size = tokens + request.tokens, size + len(request.texts)
        return batch

    def _full(self) -> bool:
        tokens = sum(r.tokens for r in self._queue)
        size = sum(len(r.texts) for r in self._queue)
        return tokens >= self.max_batch_tokens or size >= self.max_batch_size

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                # A lone request goes at once (waiting would only add latency); once others are queued behind it,
                # the batch waits up to max_wait for more to arrive. Requests that come in while a batch runs
                # queue up and form the next batch by themselves.
                deadline = self._queue[0].arrived + self.max_wait
                while len(self._queue) > 1 and not self._full() and (delay := deadline - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                batch = self._take()
                texts = [t for r in batch for t in r.texts]
                started = time.perf_counter()
                try:
                    vectors = await loop.run_in_executor(self._pool, self.encode, texts, batch[0].role)
                except Exception as err:  # the requests in this batch fail; the server keeps going
                    logger.exception("encoding a batch of %d texts failed", len(texts))
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(err)
                else:
                    pos = 0
                    for r in batch:
                        if not r.future.done():  # a client that went away leaves a cancelled future
                            r.future.set_result(vectors[pos : pos + len(r.texts)])
                        pos += len(r.texts)
                finally:
                    self.waiting -= len(texts)
                if self.on_batch is not None:
                    self.on_batch(len(texts), sum(r.tokens for r in batch), time.perf_counter() - started)
