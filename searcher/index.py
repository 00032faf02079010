"""`Index`: a named directory of documents and vectors that answers questions by meaning.

It keeps the SQLite store (source of truth) and the FAISS index (derived) in agreement, and embeds
queries exactly the way its documents were embedded, as recorded in the manifest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from importlib.metadata import version
from .config import Settings
from .embedder import Embedder
from .errors import ConfigError, EmptyQueryError, IndexExistsError, IndexNotFoundError, ModelMismatchError
from .sources import Record
from .store import DocumentStore
from .vectors import VectorIndex

DOCS_FILE = "docs.sqlite"
VECTORS_FILE = "vectors.faiss"
DEFAULT_HOME = "indexes"
# Manifest keys that decide how text becomes a vector; queries must use the same values.
EMBEDDING_KEYS = ("model", "layer", "pooling", "max_length")
SEARCH_MODES = ("dense",)


@dataclass(frozen=True)
class Hit:
    """One search result: the document's external id, cosine similarity, text and metadata."""

    id: str
    score: float
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AddReport:
    """What `Index.add` did with its records."""

    added: int
    updated: int
    skipped_empty: int
    duplicates: int
    truncated: int
    max_length: int
    seconds: float

    @property
    def embedded(self) -> int:
        return self.added + self.updated


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


def list_indexes(home: str | Path | None = None) -> list[str]:
    """Names of the indexes under the home directory."""
    root = index_home(home)
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in root.iterdir() if (entry / DOCS_FILE).is_file())


class Index:
    """Documents and their vectors under one directory; create with `Index.create`, reopen with `Index.open`."""

    def __init__(self, path: Path, store: DocumentStore, vectors: VectorIndex, device: str = "auto") -> None:
        self.path = path
        self._store = store
        self._vectors = vectors
        self._device = device
        self._embedder: Embedder | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(
        cls,
        name_or_path: str | Path,
        settings: Settings | None = None,
        home: str | Path | None = None,
        embedder: Embedder | None = None,
    ) -> Index:
        """A new, empty index embedding with SETTINGS (or an already loaded EMBEDDER)."""
        settings = settings or Settings()
        path = index_path(name_or_path, home or settings.home)
        if (path / DOCS_FILE).exists():
            raise IndexExistsError(f"an index already exists at {path}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise IndexExistsError(f"{path} exists and is not an empty directory")
        embedder = embedder or Embedder.from_settings(settings)
        manifest = {
            "model": embedder.model_id,
            "fingerprint": embedder.fingerprint,
            "layer": embedder.layer,
            "pooling": embedder.pooling,
            "max_length": embedder.max_length,
            "dimension": embedder.dimension,
            "normalized": True,
            "metric": "cosine",
            "searcher_version": version("searcher"),
            "documents": 0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        path.mkdir(parents=True, exist_ok=True)
        store = DocumentStore.create(path / DOCS_FILE, manifest)
        vectors = VectorIndex.empty(embedder.dimension)
        vectors.save(path / VECTORS_FILE)
        index = cls(path, store, vectors, settings.device)
        index._embedder = embedder
        return index

    @classmethod
    def open(cls, name_or_path: str | Path, home: str | Path | None = None, device: str = "auto") -> Index:
        """An existing index; a FAISS file that is missing or disagrees with SQLite is rebuilt from stored vectors."""
        path = index_path(name_or_path, home)
        if not (path / DOCS_FILE).is_file():
            where = f"{path}" if path.exists() else f"{path} (no such directory)"
            raise IndexNotFoundError(f"no index named {str(name_or_path)!r} at {where}")
        store = DocumentStore.open(path / DOCS_FILE)
        dimension = store.manifest()["dimension"]
        vectors_file = path / VECTORS_FILE
        vectors = VectorIndex.load(vectors_file) if vectors_file.exists() else None
        if vectors is None or vectors.dimension != dimension or not _same_ids(vectors, store):
            vectors = VectorIndex.build(dimension, *store.vectors(dimension))
            vectors.save(vectors_file)
        return cls(path, store, vectors, device)

    @property
    def manifest(self) -> dict[str, Any]:
        return self._store.manifest()

    def __len__(self) -> int:
        return self._store.count()

    @property
    def embedder(self) -> Embedder:
        """The manifest's model, loaded on first use and refused if its files changed since indexing."""
        if self._embedder is None:
            manifest = self.manifest
            embedder = Embedder(*(manifest[key] for key in EMBEDDING_KEYS), device=self._device)
            if embedder.fingerprint != manifest["fingerprint"]:
                raise ModelMismatchError(
                    f"index {self.name!r} was built with a different copy of {manifest['model']} "
                    f"(fingerprint {manifest['fingerprint'][:12]}, now {embedder.fingerprint[:12]} at "
                    f"{embedder.model_dir}); restore that model or rebuild the index"
                )
            self._embedder = embedder
        return self._embedder

    @classmethod
    def open_or_create(cls, name_or_path: str | Path, settings: Settings | None = None, home: str | Path | None = None) -> Index:
        """The existing index, checked against the embedding SETTINGS given, or a new one built with them."""
        settings = settings or Settings()
        path = index_path(name_or_path, home or settings.home)
        if not (path / DOCS_FILE).exists():
            return cls.create(path, settings)
        index = cls.open(path, device=settings.device)
        index.require_settings(settings)
        return index

    def require_settings(self, settings: Settings) -> None:
        """Refuse embedding settings, other than "auto" or unset, that differ from this index's manifest."""
        manifest = self.manifest
        for key in EMBEDDING_KEYS:
            value = getattr(settings, key)
            if value not in (None, "auto") and manifest[key] != value:
                raise ConfigError(
                    f"index {self.name!r} was built with {key} {manifest[key]!r}, not {value!r}; "
                    "use a new index for other settings"
                )

    def add(
        self,
        records: Iterable[Record],
        batch_size: int = 32,
        progress: Callable[[int], None] | None = None,
    ) -> AddReport:
        """Embed and store RECORDS; an id already in the index is replaced, and the last of repeated ids wins.

        Each batch is committed to SQLite on its own; FAISS is saved once at the end (and rebuilt on open
        if a crash came first).
        """
        started = time.perf_counter()
        latest: dict[str, Record] = {}
        received = 0
        for record in records:
            received += 1
            latest[record.id] = record
        documents = [record for record in latest.values() if record.text.strip()]
        embedder = self.embedder
        tokenized = embedder.tokenize([record.text for record in documents])
        added = 0
        for positions, vectors in embedder.embed_batches(tokenized, batch_size):
            batch = [documents[i] for i in positions]
            rowids, new = self._store.upsert([(r.id, r.text, r.fields) for r in batch], vectors)
            self._vectors.upsert(rowids, vectors)
            added += new
            if progress:
                progress(len(batch))
        if documents:
            self._vectors.save(self.path / VECTORS_FILE)
        return AddReport(
            added=added,
            updated=len(documents) - added,
            skipped_empty=len(latest) - len(documents),
            duplicates=received - len(latest),
            truncated=tokenized.truncated,
            max_length=embedder.max_length,
            seconds=time.perf_counter() - started,
        )

    def search(self, text: str, k: int = 10, mode: str = "dense") -> list[Hit]:
        """The K documents closest in meaning to TEXT, by cosine similarity, best first."""
        if not text or not text.strip():
            raise EmptyQueryError("empty query: give some text to search for")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        if mode not in SEARCH_MODES:
            raise ConfigError(f"invalid mode {mode!r}: choose one of {', '.join(SEARCH_MODES)}")
        if not len(self._vectors):
            return []
        vector = self.embedder.embed([text])[0]
        matches = self._vectors.search(vector, k)
        documents = self._store.documents([rowid for rowid, _ in matches])
        return [
            Hit(id=documents[rowid].id, score=score, text=documents[rowid].text, fields=documents[rowid].fields)
            for rowid, score in matches
        ]

    def info(self) -> dict[str, Any]:
        """Name, path, document count, size on disk and manifest."""
        return {
            "name": self.name,
            "path": str(self.path),
            "documents": len(self),
            "size_bytes": sum(p.stat().st_size for p in self.path.iterdir() if p.is_file()),
            "manifest": self.manifest,
        }

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _same_ids(vectors: VectorIndex, store: DocumentStore) -> bool:
    stored = store.rowids()
    return len(vectors) == len(stored) and bool((vectors.ids() == stored).all())
