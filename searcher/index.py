"""`Index`: a named directory of documents and vectors that answers questions by meaning.

It keeps the SQLite store (source of truth) and the FAISS index (derived) in agreement, and embeds
queries exactly the way its documents were embedded, as recorded in the manifest.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock, Timeout

from .config import BATCH_SIZE, BATCH_TOKENS, Settings
from .errors import (
    ConfigError, EmptyQueryError, IndexCorruptError, IndexExistsError, IndexLockedError, IndexNotFoundError,
    ModelMismatchError,
)
from .sources import Record
from .store import FORMAT, DocumentStore, content_hash, fields_json
from .vectors import VectorIndex, check_search_params, resolve_type

if TYPE_CHECKING:
    from .embedder import EmbeddedDocuments, Embedder

DOCS_FILE = "docs.sqlite"
VECTORS_FILE = "vectors.faiss"
LOCK_FILE = "write.lock"
DEFAULT_HOME = "indexes"
log = logging.getLogger("searcher")
# Manifest keys that decide how text becomes a vector; queries must use the same values.
EMBEDDING_KEYS = ("model", "layer", "pooling", "max_length", "precision")
PRE_PRECISION_MANIFEST = {"precision": "fp32"}  # indexes written before precision was recorded
SEARCH_MODES = ("dense", "keyword", "hybrid")
HYBRID_DEPTH = 100  # candidates taken from each side before fusion
KEYWORD_SCAN_FACTOR = 10
# A filter passing at most this many documents is searched exactly over their stored vectors.
FILTER_EXACT_LIMIT = 20_000
# Weight of the relative BM25 score in hybrid mode, chosen on SciFact train and a Banking77 train-only dev split
# (benchmarks/tune_hybrid.py): +0.070 nDCG@10 on the first, -0.001 on the second.
KEYWORD_WEIGHT = 0.2


@dataclass(frozen=True)
class Hit:
    """One search result: the document's external id, score, text and metadata."""

    id: str
    score: float
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    matched: str | None = None  # the alternative phrasing that matched best, if not the document's text
    below_threshold: bool = False  # under the index's calibrated "good match" threshold

    @property
    def question(self) -> str | None:
        """For a FAQ entry, the wording of its question that matched; None for other documents."""
        return self.matched or self.fields.get("question")

    @property
    def answer(self) -> str | None:
        """For a FAQ entry, its answer; None for other documents."""
        return self.fields.get("answer")

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "text": self.text, "fields": self.fields, "matched": self.question,
                "answer": self.answer, "below_threshold": self.below_threshold}


def hits_json(hits: list[Hit]) -> list[dict[str, Any]]:
    """HITS ranked from 1, as `searcher query --json` and the HTTP API give them."""
    return [{"rank": rank, **hit.as_json()} for rank, hit in enumerate(hits, start=1)]


@dataclass(frozen=True)
class AddReport:
    """What `Index.add` did with its records."""

    added: int
    updated: int
    unchanged: int
    skipped_empty: int
    duplicates: int
    truncated: int
    max_length: int
    seconds: float
    model_seconds: float = 0.0  # of SECONDS, the time spent in the model's forward passes

    @property
    def documents(self) -> int:
        """Documents in the input, after empty texts and repeated ids."""
        return self.added + self.updated + self.unchanged


@dataclass
class _AddPlan:
    new: list[Record] = field(default_factory=list)
    changed: list[Record] = field(default_factory=list)
    fields_only: list[Record] = field(default_factory=list)
    unchanged: list[Record] = field(default_factory=list)

    def counts(self, received: int, empty: int) -> dict[str, int]:
        """`AddReport`'s document counts for this plan, made from RECEIVED records of which EMPTY had no text."""
        planned = len(self.new) + len(self.changed) + len(self.fields_only) + len(self.unchanged)
        return {"added": len(self.new), "updated": len(self.changed) + len(self.fields_only),
                "unchanged": len(self.unchanged), "skipped_empty": empty, "duplicates": received - planned - empty}


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


def existing_index_path(name_or_path: str | Path, home: str | Path | None = None) -> Path:
    """The directory of an existing index, or IndexNotFoundError naming where it was looked for."""
    path = index_path(name_or_path, home)
    if not (path / DOCS_FILE).is_file():
        where = f"{path}" if path.exists() else f"{path} (no such directory)"
        raise IndexNotFoundError(f"no index named {str(name_or_path)!r} at {where}")
    return path


def list_indexes(home: str | Path | None = None) -> list[str]:
    """Names of the indexes under the home directory."""
    root = index_home(home)
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in root.iterdir() if (entry / DOCS_FILE).is_file())


class Index:
    """Documents and their vectors under one directory; create with `Index.create`, reopen with `Index.open`."""

    def __init__(self, path: Path, store: DocumentStore, device: str = "auto", lock_timeout: float | None = None) -> None:
        self.path = path
        self._store = store
        self._device = device
        self.lock_timeout = lock_timeout  # seconds a writer waits for another one; None: as long as it takes
        self._embedder: Embedder | None = None
        self._stale = False  # vectors were dropped that the structure cannot remove in place (HNSW)
        self._writer_depth = 0  # how many `writing` blocks of this object hold the writer lock
        self._vectors, self._loaded_generation = self._load_vectors()

    def _load_vectors(self, mmap: bool = True) -> tuple[VectorIndex, int]:
        """The FAISS file (IVF lists memory-mapped with MMAP) if it reflects SQLite's current state, else a
        rebuild from the stored vectors."""
        manifest = self._store.manifest()
        dimension, generation = manifest["dimension"], manifest.get("generation", 0)
        vectors_file = self.path / VECTORS_FILE
        try:
            vectors = VectorIndex.load(vectors_file, manifest.get("search_params", {}), mmap) if vectors_file.exists() else None
        except IndexCorruptError:
            vectors = None  # derived data: rebuilt below like a missing file
        if vectors is not None and vectors.dimension == dimension and (
            (manifest.get("vectors_generation") == generation and len(vectors) == self._store.vector_count())
            or _same_ids(vectors, self._store)
        ):
            return vectors, generation
        log.warning("the vector file of index %s was missing, unreadable or out of date: rebuilt from the stored vectors", self.name)
        vectors = self._rebuilt_vectors()
        lock = FileLock(self.path / LOCK_FILE)
        try:
            with lock.acquire(timeout=0):  # a writer at work will save its own file
                vectors.save(vectors_file)
                self._store.update_manifest({"vectors_generation": generation})
        except Timeout:
            pass
        return vectors, generation

    def _rebuilt_vectors(self) -> VectorIndex:
        """A new vector structure over every stored vector, of the manifest's index type."""
        manifest = self._store.manifest()
        dimension = manifest["dimension"]
        return VectorIndex.build(dimension, *self._store.vectors(dimension), manifest.get("index_type", "auto"),
                                 manifest.get("search_params", {}))

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
        embedder = embedder or _embedding().Embedder.from_settings(settings)
        manifest = {
            "model": embedder.model_id,
            "fingerprint": embedder.fingerprint,
            "layer": embedder.layer,
            "pooling": embedder.pooling,
            "max_length": embedder.max_length,
            "precision": embedder.precision,
            "index_type": settings.index_type,
            "search_params": {},
            "dimension": embedder.dimension,
            "format": FORMAT,
            "normalized": True,
            "metric": "cosine",
            "searcher_version": version("searcher"),
            "documents": 0,
            "generation": 0,
            "vectors_generation": 0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        path.mkdir(parents=True, exist_ok=True)
        VectorIndex.empty(embedder.dimension).save(path / VECTORS_FILE)
        index = cls(path, DocumentStore.create(path / DOCS_FILE, manifest), settings.device)
        index._embedder = embedder
        return index

    @classmethod
    def open(
        cls,
        name_or_path: str | Path,
        home: str | Path | None = None,
        device: str = "auto",
        lock_timeout: float | None = None,
        embedder: Embedder | None = None,
    ) -> Index:
        """An existing index; a FAISS file that is missing or disagrees with SQLite is rebuilt from stored vectors.

        EMBEDDER, already loaded (by another `Index` over the same files, say), is used if it embeds exactly
        as the manifest says, instead of loading the model again.
        """
        path = existing_index_path(name_or_path, home)
        index = cls(path, DocumentStore.open(path / DOCS_FILE), device, lock_timeout)
        if embedder is not None:
            index._embedder = index._checked(embedder)
        return index

    @property
    def manifest(self) -> dict[str, Any]:
        return self._store.manifest()

    def __len__(self) -> int:
        return self._store.count()

    @property
    def embedder(self) -> Embedder:
        """The manifest's model, loaded on first use and refused if its files changed since indexing."""
        if self._embedder is None:
            manifest = PRE_PRECISION_MANIFEST | self.manifest
            self._embedder = self._checked(_embedding().Embedder(**{key: manifest[key] for key in EMBEDDING_KEYS}, device=self._device))
        return self._embedder

    def _checked(self, embedder: Embedder) -> Embedder:
        """EMBEDDER, if it embeds as the manifest says with the very model files the index was built with."""
        manifest = PRE_PRECISION_MANIFEST | self.manifest
        differing = [key for key in EMBEDDING_KEYS if getattr(embedder, "model_id" if key == "model" else key) != manifest[key]]
        if differing:
            raise ModelMismatchError(f"index {self.name!r} embeds with other settings ({', '.join(differing)}) than this model")
        if embedder.fingerprint != manifest["fingerprint"]:
            raise ModelMismatchError(
                f"index {self.name!r} was built with a different copy of {manifest['model']} "
                f"(fingerprint {manifest['fingerprint'][:12]}, now {embedder.fingerprint[:12]} at "
                f"{embedder.model_dir}); restore that model or rebuild the index"
            )
        return embedder

    @classmethod
    def open_or_create(cls, name_or_path: str | Path, settings: Settings | None = None, home: str | Path | None = None) -> Index:
        """The existing index, checked against the embedding SETTINGS given, or a new one built with them."""
        settings = settings or Settings()
        path = index_path(name_or_path, home or settings.home)
        if not (path / DOCS_FILE).exists():
            return cls.create(path, settings)
        index = cls.open(path, device=settings.device)
        index.require_settings(settings)
        stored_type = index.manifest.get("index_type", "auto")
        if settings.index_type not in ("auto", stored_type):
            raise ConfigError(
                f"index {index.name!r} has index type {stored_type!r}; change it with "
                f"`searcher reindex {index.name} --index-type {settings.index_type}`"
            )
        return index

    def require_settings(self, settings: Settings) -> None:
        """Refuse embedding settings, other than "auto" or unset, that differ from this index's manifest."""
        manifest = PRE_PRECISION_MANIFEST | self.manifest
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
        batch_size: int = BATCH_SIZE,
        batch_tokens: int = BATCH_TOKENS,
        progress: Callable[[int], None] | None = None,
    ) -> AddReport:
        """Embed and store RECORDS; an id already in the index is replaced, and the last of repeated ids wins.

        Documents go through the model in batches of at most BATCH_SIZE documents and BATCH_TOKENS padded
        tokens. Each batch is committed to SQLite on its own; FAISS is saved once at the end (and rebuilt on
        open if a crash came first).
        """
        started = time.perf_counter()
        documents, received, empty = latest_documents(records)
        embedder = self.embedder  # loaded (and its fingerprint checked) before anything is written
        truncated, model_seconds = 0, 0.0
        with self.writing():
            plan = self._plan(documents)
            if plan.fields_only:
                with self._store.transaction():
                    self._store.upsert_documents([_row(record) for record in plan.fields_only])
            pending = plan.new + plan.changed
            for embedded in embedder.embed_documents([(record.text, record.phrasings) for record in pending], batch_size, batch_tokens):
                with self._store.transaction():
                    stored = self._store_embedded([pending[i] for i in embedded.positions], embedded.vectors, plan)
                self._index_vectors(*stored)
                truncated += embedded.truncated
                model_seconds += embedded.model_seconds
                if progress:
                    progress(len(embedded.positions))
            if pending or plan.fields_only:
                self._save_vectors()
        return AddReport(**plan.counts(received, empty), truncated=truncated, max_length=embedder.max_length,
                         seconds=time.perf_counter() - started, model_seconds=model_seconds)

    def add_embedded(self, shards: Iterable[tuple[list[Record], EmbeddedDocuments]], progress: Callable[[int], None] | None = None) -> AddReport:
        """Store documents embedded elsewhere (`searcher.distributed`), one transaction per shard.

        Each shard holds records and, in EMBEDDED, the vectors of every one of them (text, then phrasings), as
        `Embedder.embed_documents` made them with this index's model. Within a shard the last of repeated ids
        wins; a later shard replaces an earlier one's document, and unchanged documents are left alone, as in
        `add`. FAISS is saved once at the end.
        """
        started = time.perf_counter()
        totals = _AddPlan().counts(0, 0)
        truncated, model_seconds, changed = 0, 0.0, False
        with self.writing():
            for records, embedded in shards:
                starts = np.cumsum([0] + [1 + len(record.phrasings) for record in records])
                expected = (int(starts[-1]), self.manifest["dimension"])
                if embedded.vectors.shape != expected:
                    raise IndexCorruptError(f"a shard of {len(records)} documents came with vectors of shape "
                                            f"{embedded.vectors.shape}; this index needs {expected}")
                rows = {record.id: embedded.vectors[starts[i]:starts[i + 1]] for i, record in enumerate(records)}
                documents, received, empty = latest_documents(records)
                plan = self._plan(documents)
                pending = plan.new + plan.changed
                if pending or plan.fields_only:
                    vectors = np.concatenate([rows[record.id] for record in pending]) if pending else embedded.vectors[:0]
                    with self._store.transaction():
                        self._store.upsert_documents([_row(record) for record in plan.fields_only])
                        stored = self._store_embedded(pending, vectors, plan)
                    self._index_vectors(*stored)
                    changed = True
                for key, count in plan.counts(received, empty).items():
                    totals[key] += count
                truncated += embedded.truncated
                model_seconds += embedded.model_seconds
                if progress:
                    progress(received)
            if changed:
                self._save_vectors()
        return AddReport(**totals, truncated=truncated, max_length=self.manifest["max_length"],
                         seconds=time.perf_counter() - started, model_seconds=model_seconds)

    def _store_embedded(self, records: list[Record], vectors: np.ndarray, plan: _AddPlan) -> tuple[list[int], np.ndarray, list[int]]:
        """Upsert RECORDS with their VECTORS (text, then phrasings, record by record) inside the caller's
        transaction, so that a document and its vectors commit together and an interrupted run leaves only
        complete documents. Returns what `_index_vectors` applies once the transaction is committed."""
        rowids, dropped = self._store.upsert_documents([_row(record) for record in records], {record.id for record in plan.changed})
        owners = [(rowid, phrasing) for record, rowid in zip(records, rowids) for phrasing in (None, *record.phrasings)]
        return self._store.add_vectors(owners, vectors), vectors, dropped

    def _index_vectors(self, vector_ids: list[int], vectors: np.ndarray, dropped: list[int]) -> None:
        self._forget_vectors(dropped)
        if vector_ids:
            self._vectors.add(vector_ids, vectors)

    def stored_keys(self) -> np.ndarray:
        """Sorted `document_key`s of the stored documents: a record whose key is here is stored unchanged."""
        return self._store.document_keys()

    def _plan(self, documents: list[Record]) -> _AddPlan:
        """Sort records into new, changed (to embed again), fields-only updates and unchanged ones."""
        stored = self._store.stored([record.id for record in documents])
        plan = _AddPlan()
        for record in documents:
            before = stored.get(record.id)
            if before is None:
                plan.new.append(record)
            elif before[0] != content_hash(record.text, record.phrasings) or before[2] != 1 + len(record.phrasings):
                plan.changed.append(record)  # a differing vector count means an interrupted earlier run
            elif before[1] != fields_json(record.fields):
                plan.fields_only.append(record)
            else:
                plan.unchanged.append(record)
        return plan

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Remove documents by external id; returns the ids that were found (unknown ids are ignored)."""
        with self.writing():
            with self._store.transaction():
                deleted, dropped = self._store.delete_documents(list(dict.fromkeys(ids)))
            self._forget_vectors(dropped)
            if deleted:
                self._save_vectors()
        return deleted

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the index's writer lock: one writer at a time, readers never wait.

        Re-entrant, so that a caller can hold it across several writes (a Ray run across all its shards).
        """
        if self._writer_depth:
            self._writer_depth += 1
            try:
                yield
            finally:
                self._writer_depth -= 1
            return
        lock = FileLock(self.path / LOCK_FILE)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("waiting for another process writing to index %s", self.name)
            try:
                lock.acquire(timeout=-1 if self.lock_timeout is None else self.lock_timeout)
            except Timeout:
                raise IndexLockedError(
                    f"index {self.name!r} is being written by another process; gave up after {self.lock_timeout} s"
                ) from None
        self._writer_depth = 1
        try:
            # Another process may have written since this one loaded its vectors, and mapped lists are read-only.
            if self._vectors.read_only or self._store.manifest().get("vectors_generation") != self._loaded_generation:
                self._vectors, self._loaded_generation = self._load_vectors(mmap=False)
            yield
        finally:
            self._writer_depth = 0
            lock.release()

    def reindex(self, index_type: str, search_params: dict[str, int] | None = None) -> VectorIndex:
        """Rebuild the vector structure as INDEX_TYPE from the stored vectors (nothing is embedded again)."""
        resolve_type(index_type, 0)  # refuse an unknown type before touching anything
        params = check_search_params(search_params or {})
        with self.writing():
            self._store.update_manifest({"index_type": index_type, "search_params": params})
            self._vectors = self._rebuilt_vectors()
            self._save_vectors()
        return self._vectors

    def _forget_vectors(self, ids: list[int]) -> None:
        """Remove vectors in place, or mark an HNSW graph, which cannot remove, for a rebuild at the next save."""
        if self._vectors.removes:
            self._vectors.remove(ids)
        elif ids:
            self._stale = True

    def _save_vectors(self) -> None:
        """Save FAISS atomically, then record which SQLite generation it reflects.

        The structure is rebuilt first when it no longer fits: an HNSW graph after removals, or a vector
        count for which the index type now means another structure (auto past 50,000 vectors).
        """
        wanted = resolve_type(self._store.manifest().get("index_type", "auto"), len(self._vectors))
        if self._stale or wanted != self._vectors.kind:
            self._vectors = self._rebuilt_vectors()
            self._stale = False
        generation = self._store.generation()
        self._vectors.save(self.path / VECTORS_FILE)
        self._store.update_manifest({"vectors_generation": generation})
        self._loaded_generation = generation

    def search(
        self,
        text: str,
        k: int = 10,
        mode: str = "dense",
        min_score: float | None = None,
        keyword_weight: float = KEYWORD_WEIGHT,
        filters: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """The K best documents for TEXT, best first, at least MIN_SCORE, among those whose fields pass FILTERS.

        dense: cosine similarity of the best-matching phrasing; keyword: BM25; hybrid: cosine plus
        KEYWORD_WEIGHT times BM25 relative to the query's best keyword match. Hits scoring under the
        index's calibrated threshold for the mode are marked `below_threshold`. FILTERS ({field: value} or
        {field: {"in": [values]}}, see `store.filter_sql`) never cost recall: a selective filter is searched
        exactly over its documents, a broad one by fetching past the documents it leaves out.
        """
        if not text or not text.strip():
            raise EmptyQueryError("empty query: give some text to search for")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        if mode not in SEARCH_MODES:
            raise ConfigError(f"invalid mode {mode!r}: choose one of {', '.join(SEARCH_MODES)}")
        manifest = self.manifest
        self._refresh_vectors(manifest)
        # Keyword search filters inside its own SQL; the vector side needs the passing documents' rowids.
        allowed = self._store.matching_documents(filters) if filters and mode != "keyword" else None
        if mode == "keyword":
            scored = {rowid: (score, None) for rowid, score in self._store.keyword_search(text, k, filters)}
        elif not len(self._vectors) or allowed == set():
            scored = {}
        elif mode == "dense":
            scored = self._dense(self.embedder.embed([text])[0], k, allowed)
        else:
            scored = self._hybrid(text, k, keyword_weight, filters, allowed)
        ranked = sorted(scored.items(), key=lambda item: -item[1][0])[:k]
        if min_score is not None:
            ranked = [(rowid, match) for rowid, match in ranked if match[0] >= min_score]
        threshold = manifest.get("thresholds", {}).get(mode)
        documents = self._store.documents([rowid for rowid, _ in ranked])
        return [
            Hit(
                id=documents[rowid].id, score=score, text=documents[rowid].text, fields=documents[rowid].fields,
                matched=phrasing, below_threshold=threshold is not None and score < threshold,
            )
            for rowid, (score, phrasing) in ranked
            if rowid in documents  # deleted by a writer since the vectors were loaded
        ]

    def _refresh_vectors(self, manifest: dict[str, Any]) -> None:
        """Pick up the vector file a writer saved since this index was opened."""
        saved = manifest.get("vectors_generation")
        if saved is not None and saved != self._loaded_generation and (self.path / VECTORS_FILE).exists():
            self._vectors = VectorIndex.load(self.path / VECTORS_FILE, manifest.get("search_params", {}), mmap=True)
            self._loaded_generation = saved

    def _dense(self, vector: np.ndarray, k: int, allowed: set[int] | None = None) -> dict[int, tuple[float, str | None]]:
        """Best (cosine, phrasing) of the K nearest documents, only ALLOWED ones if given.

        Documents with several phrasings, and filters, need a deeper look than K vectors.
        """
        if allowed is not None and len(allowed) <= FILTER_EXACT_LIMIT:
            return dict(sorted(self._score_documents(vector, allowed).items(), key=lambda item: -item[1][0])[:k])
        total = len(self._vectors)
        fetch = min(total, k if allowed is None else k * -(-len(self) // len(allowed)))  # expect the filter's share
        while True:
            matches = self._vectors.search(vector, fetch, self._exact_vectors)
            owners = self._store.vector_owners([vector_id for vector_id, _ in matches])
            best: dict[int, tuple[float, str | None]] = {}
            for vector_id, score in matches:
                if vector_id in owners:  # else replaced by a writer since the vectors were loaded
                    document, phrasing = owners[vector_id]
                    if allowed is None or document in allowed:
                        best.setdefault(document, (score, phrasing))
            if len(best) >= k or fetch >= total:
                return best
            fetch = min(fetch * 4, total)

    def _score_documents(self, vector: np.ndarray, documents: Iterable[int]) -> dict[int, tuple[float, str | None]]:
        """Exact (cosine, phrasing) of each of DOCUMENTS, from its best-matching stored vector."""
        owners, vectors = self._store.document_vectors(list(documents), self._vectors.dimension)
        best: dict[int, tuple[float, str | None]] = {}
        for (document, phrasing), score in sorted(zip(owners, vectors @ vector), key=lambda item: -item[1]):
            best.setdefault(document, (float(score), phrasing))
        return best

    def _exact_vectors(self, vector_ids: np.ndarray) -> np.ndarray:
        return self._store.vectors_by_id(vector_ids.tolist(), self._vectors.dimension)

    def _hybrid(
        self, text: str, k: int, keyword_weight: float, filters: dict[str, Any] | None, allowed: set[int] | None
    ) -> dict[int, tuple[float, str | None]]:
        """Dense and BM25 candidates, each scored exactly on both sides, then combined."""
        vector = self.embedder.embed([text])[0]
        depth = max(k, HYBRID_DEPTH)
        dense = self._dense(vector, depth, allowed)
        # BM25 scores well past the keyword top `depth`, so dense candidates get theirs from the same query;
        # a document outside the scan scores far below the best and counts as 0.
        keyword_ranked = self._store.keyword_search(text, depth * KEYWORD_SCAN_FACTOR, filters)
        keyword = dict(keyword_ranked)
        keyword_only = [rowid for rowid, _ in keyword_ranked[:depth] if rowid not in dense]
        if keyword_only:
            dense |= self._score_documents(vector, keyword_only)
        best_keyword = keyword_ranked[0][1] if keyword_ranked else 1.0
        return {
            rowid: (cosine + keyword_weight * keyword.get(rowid, 0.0) / best_keyword, phrasing)
            for rowid, (cosine, phrasing) in dense.items()
        }

    def set_threshold(self, mode: str, threshold: float, calibration: dict[str, Any]) -> None:
        """Store the score under which MODE's hits are marked as no good match, and how it was chosen."""
        manifest = self.manifest
        self._store.update_manifest({
            "thresholds": manifest.get("thresholds", {}) | {mode: threshold},
            "calibration": manifest.get("calibration", {}) | {mode: calibration},
        })

    def check(self, repair: bool = False) -> list[str]:
        """What is wrong with the index (empty: nothing); with REPAIR, first rebuild what can be rebuilt.

        Repair rebuilds the keyword index and the vector file from SQLite, and embeds documents left
        without a vector by an interrupted run; it never loses a stored document.
        """
        if repair:
            with self.writing():
                self._store.repair()
                bare = self._store.documents_without_vectors()
                if bare:
                    vectors = self.embedder.embed([document.text for document in bare])
                    with self._store.transaction():
                        self._store.add_vectors([(document.rowid, None) for document in bare], vectors)
                self._vectors = self._rebuilt_vectors()
                self._save_vectors()
        found = self._store.problems(self.manifest["dimension"])
        vectors_file = self.path / VECTORS_FILE
        try:
            on_disk = VectorIndex.load(vectors_file, mmap=True) if vectors_file.exists() else None
        except IndexCorruptError as error:
            found.append(str(error))
        else:
            if on_disk is None or not _same_ids(on_disk, self._store):
                found.append(f"{vectors_file.name} is missing or out of step with docs.sqlite (rebuilt in memory on open)")
        return found

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


def _embedding() -> Any:
    """The embedder module, imported when a model is first needed: torch takes seconds to import, and
    listing, checking, dropping or keyword-searching an index needs none of it."""
    from . import embedder

    return embedder


def latest_documents(records: Iterable[Record]) -> tuple[list[Record], int, int]:
    """The records to store, the last of repeated ids winning, with how many came in and how many had no text."""
    latest: dict[str, Record] = {}
    received = 0
    for record in records:
        received += 1
        latest[record.id] = record
    documents = [record for record in latest.values() if record.text.strip()]
    return documents, received, len(latest) - len(documents)


def _row(record: Record) -> tuple[str, str, dict[str, Any], str]:
    """A record as the store writes it: id, text, fields and the hash of what gets embedded."""
    return record.id, record.text, record.fields, content_hash(record.text, record.phrasings)


def drop_index(name_or_path: str | Path, home: str | Path | None = None) -> Path:
    """Delete an index's directory, once no writer holds it; refuses a directory that is not an index."""
    path = index_path(name_or_path, home)
    if not (path / DOCS_FILE).is_file():
        raise IndexNotFoundError(f"no index named {str(name_or_path)!r} at {path}")
    try:
        with FileLock(path / LOCK_FILE).acquire(timeout=0):
            shutil.rmtree(path)
    except Timeout:
        raise IndexLockedError(f"index {str(name_or_path)!r} is being written by another process") from None
    return path


def _same_ids(vectors: VectorIndex, store: DocumentStore) -> bool:
    stored = store.vector_ids()
    return len(vectors) == len(stored) and bool((vectors.ids() == stored).all())
