"""Stages that overlap: an iterator's items made on a thread of their own, a bounded number ahead of their user.

`Index.add` chains them: records are read (and texts tokenized) on one thread, the model's forward passes are
driven from another (each runs on the model thread, see `embedder.on_model_thread`), and the calling thread
stores what comes out, so that no stage waits for the others to finish their part. Each queue holds a few
items, so memory stays bounded whatever the input's size.

An exception raised while making an item is raised, the same object, where that item would have been taken.
Closing the iterator (as a `for` loop left by an exception does, once its generator is closed) stops the
thread and, through its own iterator, every stage before it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()  # put after the last item
_POLL_S = 0.05  # how often a stage blocked on a full queue checks whether it was told to stop


def ahead(items: Iterable[T], size: int, name: str) -> Generator[T, None, None]:
    """ITEMS as they come, made on a thread named NAME at most SIZE items ahead of the caller."""
    made: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                made.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        source: Iterator[T] = iter(items)
        try:
            for item in source:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as error:  # handed to the caller, where it is raised
            put((_END, error))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # an earlier stage stops too

    thread = threading.Thread(target=make, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = made.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]  # anything but _END is an item of ITEMS
    finally:
        stop.set()
        thread.join()
