"""Where indexes live: the home directory of named indexes, the files of one index, listing and dropping."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import ConfigError, IndexLockedError, IndexNotFoundError

DOCS_FILE = "docs.sqlite"
VECTORS_FILE = "vectors.faiss"
LOCK_FILE = "write.lock"
DEFAULT_HOME = "indexes"


def index_home(home: str | Path | None = None) -> Path:
    """Where named indexes live: HOME, else $SEARCHER_HOME, else ./indexes."""
    return Path(home or os.environ.get("SEARCHER_HOME") or DEFAULT_HOME)


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


def writer_lock(path: Path) -> FileLock:
    """The lock that one writer of the index at PATH holds at a time."""
    return FileLock(path / LOCK_FILE)


def drop_index(name_or_path: str | Path, home: str | Path | None = None) -> Path:
    """Delete an index's directory, once no writer holds it; refuses a directory that is not an index."""
    path = existing_index_path(name_or_path, home)
    try:
        with writer_lock(path).acquire(timeout=0):
            shutil.rmtree(path)
    except Timeout:
        raise IndexLockedError(f"index {str(name_or_path)!r} is being written by another process") from None
    return path
