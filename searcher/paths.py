"""Where indexes live: the home directory of named indexes, the files of one index, listing and dropping; and
where the cache of what only saves time lives."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import ConfigError, IndexLockedError, IndexNotFoundError, IndexWriteError

DOCS_FILE = "docs.sqlite"
VECTORS_FILE = "vectors.faiss"
QUERY_LOG_FILE = "queries.sqlite"  # the question log, apart from docs.sqlite (see `querylog`)
LOCK_FILE = "write.lock"
# A new docs.sqlite is written under this name and renamed into place whole (writers only, under the lock).
STAGED_DOCS_FILE = ".docs.sqlite.new"
DEFAULT_HOME = "indexes"

log = logging.getLogger("searcher")


def index_home(home: str | Path | None = None) -> Path:
    """Where named indexes live: HOME, else $SEARCHER_HOME, else ./indexes."""
    return Path(home or os.environ.get("SEARCHER_HOME") or DEFAULT_HOME)


def cache_home() -> Path:
    """Where searcher keeps what only saves time (file hashes, traced models): $SEARCHER_CACHE_DIR, else
    $XDG_CACHE_HOME/searcher, else ~/.cache/searcher."""
    if os.environ.get("SEARCHER_CACHE_DIR"):
        return Path(os.environ["SEARCHER_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "searcher"


def index_path(name_or_path: str | Path, home: str | Path | None = None) -> Path:
    """A bare name lives under the home directory; anything with a path separator is a path."""
    text = str(name_or_path)
    if not text.strip():
        raise ConfigError("an index needs a name")
    if os.sep in text or "/" in text or text.startswith("."):
        return Path(text).expanduser()
    return index_home(home) / text


def is_index(path: Path) -> bool:
    return (path / DOCS_FILE).is_file()


def existing_index_path(name_or_path: str | Path, home: str | Path | None = None) -> Path:
    """The directory of an existing index, or IndexNotFoundError naming where it was looked for."""
    path = index_path(name_or_path, home)
    if not is_index(path):
        where = f"{path}" if path.exists() else f"{path} (no such directory)"
        raise IndexNotFoundError(f"no index named {str(name_or_path)!r} at {where}")
    return path


def list_indexes(home: str | Path | None = None) -> list[str]:
    """Names of the indexes under the home directory."""
    root = index_home(home)
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in root.iterdir() if is_index(entry))


def sync_directory(directory: Path) -> None:
    """Make the renames into DIRECTORY durable: a renamed file is only there after a crash once it is synced."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def holds_no_index(path: Path) -> bool:
    """Whether the directory PATH is empty but for what an interrupted creation of an index leaves there."""
    return all(
        entry.name in (LOCK_FILE, VECTORS_FILE) or entry.name.startswith(STAGED_DOCS_FILE) for entry in path.iterdir()
    )


@contextmanager
def writer_lock(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the lock that one writer of the index at PATH holds at a time, waiting up to TIMEOUT seconds for
    another writer to finish (None: as long as it takes; 0: not at all)."""
    lock = FileLock(path / LOCK_FILE)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:  # before OSError, of which it is a subclass
            if timeout == 0:
                raise
            log.warning("waiting for another process writing to index %s", path.name)
            lock.acquire(timeout=-1 if timeout is None else timeout)
    except Timeout:
        waited = f"; gave up after {timeout} s" if timeout else ""
        raise IndexLockedError(f"index {path.name!r} is being written by another process{waited}") from None
    except OSError as error:  # read-only storage, a lock file that is a link, a directory removed meanwhile
        raise IndexWriteError(f"cannot write index {path.name!r}: {error.strerror}") from None
    try:
        yield
    finally:
        lock.release()


def drop_index(name_or_path: str | Path, home: str | Path | None = None) -> Path:
    """Delete an index's directory, once no writer holds it; refuses a directory that is not an index."""
    path = existing_index_path(name_or_path, home)
    with writer_lock(path, timeout=0):
        shutil.rmtree(path)
    return path
