"""Stages that overlap: an iterator's items made on a thread of their own, a bounded number ahead of their user.

`Index.add` chains them: records are read on one thread, texts tokenized on another, the model's forward
passes driven from a third (each runs on the model thread, see `embedder.on_model_thread`), and the calling
thread stores what comes out, so that no step waits for the others to finish their part. Each queue holds a
few items, so memory stays bounded whatever the input's size.

An exception raised while making an item is raised, the same object, where that item would have been taken.
Closing an `Ahead` stops its thread and closes its source, which stops a stage before it in turn.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()  # put after the last item
_POLL_S = 0.05  # how often a stage blocked on a full queue looks whether it was told to stop

Made = queue.Queue[tuple[object, BaseException | None]]


class Ahead(Generic[T]):
    """ITEMS as they come, made on a thread named NAME, which starts at once, at most SIZE items ahead."""

    def __init__(self, items: Iterable[T], size: int, name: str) -> None:
        self._made: Made = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_make, args=(items, self._made, self._stop), name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._stop.is_set():
            raise StopIteration
        item, error = self._made.get()
        if error is not None:
            self.close()
            raise error
        if item is _END:
            self.close()
            raise StopIteration
        return item  # type: ignore[return-value]  # anything but _END is one of ITEMS

    def close(self) -> None:
        """Stop making items, and wait until the thread (and any stage before it) has stopped."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __del__(self) -> None:
        self._stop.set()  # never closed: the thread stops at its next item


def _make(items: Iterable[T], made: Made, stop: threading.Event) -> None:
    """Put ITEMS into MADE until they end, raise or STOP is set; then close their iterator."""

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                made.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    source = iter(items)
    try:
        for item in source:
            if not put((item, None)):
                return
        put((_END, None))
    except BaseException as error:  # raised where the caller takes the next item
        put((_END, error))
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
