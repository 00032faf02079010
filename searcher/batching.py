"""Micro-batching: the queries of concurrent search requests share the model's forward passes.

On a CPU a forward pass over one short query costs several milliseconds, while batched the model embeds
about 1,100 short sentences a second: a server embedding each request on its own spends its time on
per-pass overhead, and every request queues behind the others' passes. A `QueryBatcher` gives each served
index one thread that embeds, in one pass, whatever queries are waiting when it is free. It imports no web
framework: the server hands it texts and awaits the futures it returns.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .errors import ServerBusyError

MAX_BATCH_TEXTS = 64  # texts per forward pass: past this a pass costs as much per text as two smaller ones
# Texts waiting for the model past which a request is refused at once: at ~1,100 short texts a second, the
# last of them waits about a second.
MAX_WAITING_TEXTS = 1_024
# How long a batch holding several requests waits for more: when requests arrive together, others are
# likely on their way. A lone request never waits.
GATHER_S = 0.002
T = TypeVar("T")


@dataclass(frozen=True)
class _Waiting:
    texts: list[str]
    future: Future[Any]
    work: Callable[[], Any] | None = None  # other work for the model's thread (see `run`), instead of TEXTS


class QueryBatcher:
    """One thread embedding the waiting requests' texts together, MAX_BATCH_TEXTS at most per pass (a
    larger request goes whole, alone), each request's future resolved with its rows or its exception.

    EMBED is the model (`Index.embed_queries`); ON_BATCH hears how many texts each pass held.
    """

    max_batch_texts = MAX_BATCH_TEXTS
    max_waiting_texts = MAX_WAITING_TEXTS
    gather_s = GATHER_S

    def __init__(
        self, name: str, embed: Callable[[list[str]], np.ndarray], on_batch: Callable[[int], None] = lambda _: None
    ) -> None:
        self.name = name
        self._embed = embed
        self._on_batch = on_batch
        self._queue: deque[_Waiting] = deque()
        self._waiting_texts = 0
        self._busy = False  # a pass or other work is running
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"embed-{name}", daemon=True)
        self._thread.start()

    @property
    def waiting_texts(self) -> int:
        """Texts submitted and not yet taken into a forward pass."""
        return self._waiting_texts

    def submit(self, texts: Sequence[str]) -> Future[np.ndarray]:
        """A future of TEXTS' vectors, one row each; ServerBusyError at once when too many texts wait already
        (a request would wait longer than it is worth) or the batcher is closed."""
        waiting = _Waiting(list(texts), Future())
        with self._changed:
            if self._closed:
                raise ServerBusyError(f"index {self.name!r} is shutting down; retry on another server")
            if self._waiting_texts + len(waiting.texts) > self.max_waiting_texts:
                raise ServerBusyError(
                    f"index {self.name!r} is busy: {self._waiting_texts:,} queries wait for its model; retry later"
                )
            self._queue.append(waiting)
            self._waiting_texts += len(waiting.texts)
            self._changed.notify()
        return waiting.future

    @property
    def idle(self) -> bool:
        """Whether nothing waits and nothing runs: work given to `run` now would start at once."""
        return not self._queue and not self._busy

    def run(self, work: Callable[[], T]) -> Future[T]:
        """A future of WORK's answer, run on the batcher's thread in its turn: a search that is alone can be
        embedded and ranked there in one hand-off, on the thread whose model threads are warm."""
        waiting = _Waiting([], Future(), work)
        with self._changed:
            if self._closed:
                raise ServerBusyError(f"index {self.name!r} is shutting down; retry on another server")
            self._queue.append(waiting)
            self._changed.notify()
        return waiting.future

    def close(self) -> None:
        """Embed what was submitted, then stop the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()

    def _run(self) -> None:
        while batch := self._next_batch():
            try:
                self._serve(batch)
            finally:
                with self._changed:
                    self._busy = False

    def _serve(self, batch: list[_Waiting]) -> None:
        """One forward pass over BATCH's texts, or BATCH's one piece of other work."""
        if batch[0].work is not None:
            try:
                batch[0].future.set_result(batch[0].work())
            except Exception as error:
                batch[0].future.set_exception(error)
            return
        texts = [text for waiting in batch for text in waiting.texts]
        try:
            vectors = self._embed(texts)
        except Exception as error:
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            # One request's texts may be what failed: each is tried alone, so that only its own fails.
            for waiting in batch:
                self._embed_alone(waiting)
            return
        self._on_batch(len(texts))
        start = 0
        for waiting in batch:
            waiting.future.set_result(vectors[start : start + len(waiting.texts)])
            start += len(waiting.texts)

    def _embed_alone(self, waiting: _Waiting) -> None:
        try:
            vectors = self._embed(waiting.texts)
        except Exception as error:
            waiting.future.set_exception(error)
            return
        self._on_batch(len(waiting.texts))
        waiting.future.set_result(vectors)

    def _next_batch(self) -> list[_Waiting]:
        """The requests of the next forward pass; empty once closed with nothing left to embed."""
        with self._changed:
            batch: list[_Waiting] = []
            while not batch:
                while not self._queue:
                    if self._closed:
                        return []
                    self._changed.wait()
                batch = self._take(self.max_batch_texts, whole_first=True)  # empty if all were cancelled
            self._busy = True
            if len(batch) > 1:
                deadline = time.monotonic() + self.gather_s
                room = self.max_batch_texts - sum(len(waiting.texts) for waiting in batch)
                while room > 0 and (left := deadline - time.monotonic()) > 0:
                    if not self._queue:
                        self._changed.wait(left)
                        continue
                    more = self._take(room, whole_first=False)
                    if not more and self._queue:
                        break  # the next request does not fit: it starts the next pass
                    batch += more
                    room -= sum(len(waiting.texts) for waiting in more)
            return batch

    def _take(self, room: int, whole_first: bool) -> list[_Waiting]:
        """Requests from the front of the queue whose texts fit in ROOM (the first one whatever its size if
        WHOLE_FIRST), leaving out those their client gave up on. Called holding the lock."""
        taken: list[_Waiting] = []
        while self._queue and (len(self._queue[0].texts) <= room or (whole_first and not taken)):
            if self._queue[0].work is not None and (taken or not whole_first):
                break  # other work runs alone
            waiting = self._queue.popleft()
            self._waiting_texts -= len(waiting.texts)
            if waiting.future.set_running_or_notify_cancel():
                taken.append(waiting)
                if waiting.work is not None:
                    break
                room -= len(waiting.texts)
        return taken
