"""An asyncio micro-batcher: requests that arrive together share one model call.

A web server answers each request in its own coroutine, but the model and the matrix
product against the index cost about the same for one query as for sixteen. The
batcher queues each request's item; one worker takes the first waiting item, gathers
whatever else arrives within `max_wait` seconds (at most `max_batch` items), and runs
the batch function once, in a single worker thread, so the event loop stays free and
model calls never run concurrently. Under load the queue fills while a batch computes,
so batches grow by themselves; an idle server adds at most `max_wait` to a request.

The batch function returns one result per item, in order; a result that is an
exception is raised to that item's caller alone, and an exception raised by the
function itself goes to every caller of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["BatcherBusy", "MicroBatcher"]


class BatcherBusy(Exception):
    """More items are waiting than the batcher accepts (`max_pending`)."""


class MicroBatcher:
    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int = 32,
        max_wait: float = 0.002,
        max_pending: int = 1024,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must not be negative, not {max_wait}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_pending = max_pending
        self.batch_sizes: list[int] = []  # sizes of the last batches run (bounded), for tests and /healthz
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wenlan-batch")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    def _ensure_started(self) -> asyncio.Queue:
        """Start the worker on the running loop (again if the loop changed, as it does
        between test clients)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run())
        return self._queue

    async def submit(self, item: Any) -> Any:
        """The batch function's result for `item` (raised when it is an exception)."""
        queue = self._ensure_started()
        if queue.qsize() >= self.max_pending:
            raise BatcherBusy(f"{queue.qsize()} queries are already waiting")
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait((item, future))
        return await future

    async def _gather(self, queue: asyncio.Queue) -> list[tuple[Any, asyncio.Future]]:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [(item, future) for item, future in batch if not future.done()]  # callers that gave up

    async def _run(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather(queue)
            if not batch:
                continue
            items = [item for item, _ in batch]
            self.batch_sizes = (self.batch_sizes + [len(items)])[-256:]
            try:
                results = await loop.run_in_executor(self._executor, self.fn, items)
                if len(results) != len(items):
                    raise RuntimeError(f"the batch function returned {len(results)} results for {len(items)} items")
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # the whole batch failed: every caller hears it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def aclose(self) -> None:
        """Stop the worker (pending callers are cancelled) and the worker thread."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._worker = None
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wenlan-batch")
