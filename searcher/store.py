"""The document store: one SQLite file holding documents, their vectors, a BM25 index and the manifest.

SQLite is the source of truth; the FAISS file is derived from the `vectors` table. A document has one
vector for its text and one per alternative phrasing; a vector's rowid is its FAISS id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from .errors import IndexCorruptError, IndexVersionError, IndexWriteError, InvalidFilterError

# AUTOINCREMENT: a deleted row's rowid (a FAISS id) is never handed to another row.
SCHEMA = """
CREATE TABLE documents (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    fields TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE vectors (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    document INTEGER NOT NULL REFERENCES documents(rowid) ON DELETE CASCADE,
    phrasing TEXT,  -- NULL: the vector of the document's text; else of this alternative phrasing
    vector BLOB NOT NULL
);
CREATE INDEX vectors_document ON vectors(document);
CREATE TABLE manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

UPSERT = """
INSERT INTO documents (id, text, fields, hash) VALUES (?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET text = excluded.text, fields = excluded.fields, hash = excluded.hash
RETURNING rowid
"""

BUSY_TIMEOUT_S = 60
FORMAT = 1  # layout of docs.sqlite; raised when a newer searcher changes it

# Porter stemming over unicode61 words: "indexes" finds "indexing".
FTS_TOKENIZER = "porter"
MAX_FILTER_VALUES = 1000  # values in one {"in": [...]} filter


@dataclass(frozen=True)
class StoredDocument:
    """A document as stored: its rowid, external id, text and metadata."""

    rowid: int
    id: str
    text: str
    fields: dict[str, Any]


def content_hash(text: str, phrasings: Sequence[str] = ()) -> str:
    """sha256 of everything that is embedded for a document: its text and alternative phrasings."""
    return hashlib.sha256("\x1f".join([text, *phrasings]).encode("utf-8")).hexdigest()


def document_key(document_id: str, content: str, fields: str, vectors: int) -> int:
    """64 bits naming a document's exact stored state: id, content hash, fields JSON and number of vectors."""
    state = "\x1f".join([document_id, content, fields, str(vectors)]).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(state, digest_size=8).digest(), "little", signed=True)


def fields_json(fields: dict[str, Any]) -> str:
    return json.dumps(fields, ensure_ascii=False, sort_keys=True)


def keyword_query(text: str) -> str | None:
    """An FTS5 query matching any word of TEXT; every word is quoted, so no user text is FTS syntax."""
    words = dict.fromkeys(re.findall(r"\w+", text.lower()))
    return " OR ".join(f'"{word}"' for word in words) or None


class DocumentStore:
    """Documents, vectors, BM25 index and manifest in `docs.sqlite`, written in transactions."""

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
        self.db = db
        self.path = path
        self.read_only = on_read_only_storage(path)

    @classmethod
    def create(cls, path: Path, manifest: dict[str, Any]) -> DocumentStore:
        db = _connect(path)
        db.enable_wal()
        with db.conn:
            db.conn.executescript(SCHEMA)
        # Triggers keep the BM25 index in step with every insert, update and delete of a document.
        db.table("documents").enable_fts(["text"], fts_version="FTS5", create_triggers=True, tokenize=FTS_TOKENIZER)
        store = cls(db, path)
        store.update_manifest(manifest)
        return store

    @classmethod
    def open(cls, path: Path) -> DocumentStore:
        try:
            db = _connect(path)
            tables = set(db.table_names())
        except sqlite3.DatabaseError as error:
            raise IndexCorruptError(f"{path}: not a readable index database ({error})") from None
        if not {"documents", "vectors", "manifest", "documents_fts"} <= tables:
            raise IndexCorruptError(
                f"{path}: not a searcher index database (tables: {', '.join(sorted(tables)) or 'none'})"
            )
        store = cls(db, path)
        manifest = store.manifest()
        if manifest.get("format", FORMAT) > FORMAT:
            raise IndexVersionError(
                f"{path} was written by searcher {manifest.get('searcher_version')} in a newer format "
                f"({manifest['format']}; this searcher reads {FORMAT}): upgrade searcher"
            )
        return store

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction that raises the generation; the writing methods below run inside one.

        A full disk or read-only file becomes an IndexWriteError, with nothing half-written.
        """
        with self._write_errors(), self.db.conn:
            yield
            self._write_manifest({"documents": self.count(), "generation": self.generation() + 1})

    @contextmanager
    def _write_errors(self) -> Iterator[None]:
        """A full disk or read-only file, raised by SQLite as OperationalError, becomes an IndexWriteError."""
        try:
            yield
        except sqlite3.OperationalError as error:
            raise IndexWriteError(f"cannot write {self.path}: {error}") from None

    def manifest(self) -> dict[str, Any]:
        return {row["key"]: json.loads(row["value"]) for row in self.db["manifest"].rows}

    def update_manifest(self, values: dict[str, Any]) -> None:
        """Record facts about the index (not its contents): the generation stays as it is."""
        with self._write_errors(), self.db.conn:
            self._write_manifest(values)

    def _write_manifest(self, values: dict[str, Any]) -> None:
        self.db.conn.executemany(
            "INSERT INTO manifest (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(key, json.dumps(value)) for key, value in values.items()],
        )

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM documents").fetchone()[0]

    def vector_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM vectors").fetchone()[0]

    def stored(self, ids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
        """(content hash, fields JSON, number of vectors) of the given ids that are stored."""
        rows = self._select_in(
            "SELECT id, hash, fields, (SELECT count(*) FROM vectors WHERE document = documents.rowid) "
            "FROM documents WHERE id IN ({})",
            ids,
        )
        return {document_id: (content, fields, vectors) for document_id, content, fields, vectors in rows}

    def document_keys(self) -> np.ndarray:
        """`document_key` of every stored document, sorted (int64)."""
        rows = self.db.execute(
            "SELECT id, hash, fields, (SELECT count(*) FROM vectors WHERE document = documents.rowid) FROM documents"
        )
        return np.sort(np.fromiter((document_key(*row) for row in rows), dtype=np.int64))

    def upsert_documents(
        self, documents: Sequence[tuple[str, str, dict[str, Any], str]], reembed: Collection[str] = ()
    ) -> tuple[list[int], list[int]]:
        """Insert or replace (id, text, fields, content hash) documents.

        A replaced document keeps its rowid; the vectors of the ids in REEMBED are dropped, to be embedded
        again. Returns the rowids in input order and the ids of the dropped vectors.
        """
        rowids = [
            self.db.execute(UPSERT, (document_id, text, fields_json(fields), content)).fetchone()[0]
            for document_id, text, fields, content in documents
        ]
        return rowids, self._drop_vectors(
            [rowid for rowid, document in zip(rowids, documents, strict=True) if document[0] in reembed]
        )

    def delete_documents(self, ids: Sequence[str]) -> tuple[list[str], list[int]]:
        """Delete documents by external id; returns the ids found and their dropped vector ids."""
        rows = self._select_in("SELECT rowid, id FROM documents WHERE id IN ({})", ids)
        rowids = [rowid for rowid, _ in rows]
        dropped = self._drop_vectors(rowids)
        for chunk in _chunks(rowids):
            self.db.execute(f"DELETE FROM documents WHERE rowid IN ({_marks(chunk)})", chunk)
        return [document_id for _, document_id in rows], dropped

    def add_vectors(self, owners: Sequence[tuple[int, str | None]], vectors: np.ndarray) -> list[int]:
        """Store vectors for (document rowid, phrasing or None) owners; returns their ids."""
        return [
            self.db.execute(
                "INSERT INTO vectors (document, phrasing, vector) VALUES (?, ?, ?) RETURNING rowid",
                (document, phrasing, np.asarray(vector, dtype=np.float32).tobytes()),
            ).fetchone()[0]
            for (document, phrasing), vector in zip(owners, vectors, strict=True)
        ]

    def generation(self) -> int:
        """A counter raised by every write transaction: the state a FAISS file was saved from."""
        row = self.db.execute("SELECT value FROM manifest WHERE key = 'generation'").fetchone()
        return json.loads(row[0]) if row else 0

    def _drop_vectors(self, documents: Sequence[int]) -> list[int]:
        dropped = [row[0] for row in self._select_in("SELECT rowid FROM vectors WHERE document IN ({})", documents)]
        for chunk in _chunks(documents):
            self.db.execute(f"DELETE FROM vectors WHERE document IN ({_marks(chunk)})", chunk)
        return dropped

    def _select_in(self, sql: str, values: Sequence[Any]) -> list[tuple]:
        """Rows of SQL with its `IN ({})` filled with VALUES, in chunks under SQLite's variable limit."""
        return [
            row for chunk in _chunks(values) for row in self.db.execute(sql.format(_marks(chunk)), chunk).fetchall()
        ]

    def documents(self, rowids: Sequence[int]) -> dict[int, StoredDocument]:
        rows = self.db.execute(
            f"SELECT rowid, id, text, fields FROM documents WHERE rowid IN ({_marks(rowids)})", list(rowids)
        )
        return {rowid: StoredDocument(rowid, doc_id, text, json.loads(fields)) for rowid, doc_id, text, fields in rows}

    def vector_owners(self, vector_ids: Sequence[int]) -> dict[int, tuple[int, str | None]]:
        """(document rowid, phrasing) of each vector id."""
        rows = self.db.execute(
            f"SELECT rowid, document, phrasing FROM vectors WHERE rowid IN ({_marks(vector_ids)})", list(vector_ids)
        )
        return {rowid: (document, phrasing) for rowid, document, phrasing in rows}

    def document_vectors(
        self, documents: Sequence[int], dimension: int
    ) -> tuple[list[tuple[int, str | None]], np.ndarray]:
        """Every vector of the given documents, with its (document rowid, phrasing) owner."""
        rows = self.db.execute(
            f"SELECT document, phrasing, vector FROM vectors WHERE document IN ({_marks(documents)})", list(documents)
        ).fetchall()
        return [(document, phrasing) for document, phrasing, _ in rows], _matrix(
            [blob for _, _, blob in rows], dimension
        )

    def vectors_by_id(self, vector_ids: Sequence[int], dimension: int) -> np.ndarray:
        """The vectors with the given ids, in that order; zeros for an id a writer has removed meanwhile."""
        rows = dict(
            self.db.execute(
                f"SELECT rowid, vector FROM vectors WHERE rowid IN ({_marks(vector_ids)})", list(vector_ids)
            )
        )
        zeros = bytes(4 * dimension)
        return _matrix([rows.get(int(vector_id), zeros) for vector_id in vector_ids], dimension)

    def all_documents(self) -> Iterator[StoredDocument]:
        """Every stored document, in the order they were first stored."""
        rows = self.db.execute("SELECT rowid, id, text, fields FROM documents ORDER BY rowid")
        return (StoredDocument(rowid, doc_id, text, json.loads(fields)) for rowid, doc_id, text, fields in rows)

    def owned_vectors(self, dimension: int) -> Iterator[tuple[str, str | None, np.ndarray]]:
        """Every stored vector with its document's external id and its phrasing (None: the document's text)."""
        rows = self.db.execute(
            "SELECT documents.id, phrasing, vector FROM vectors JOIN documents ON documents.rowid = vectors.document "
            "ORDER BY vectors.rowid"
        )
        return ((document_id, phrasing, _matrix([blob], dimension)[0]) for document_id, phrasing, blob in rows)

    def vector_ids(self) -> np.ndarray:
        return np.fromiter(
            (row[0] for row in self.db.execute("SELECT rowid FROM vectors ORDER BY rowid")), dtype=np.int64
        )

    def vectors(self, dimension: int) -> tuple[np.ndarray, np.ndarray]:
        """All (vector ids, vectors) in id order, for rebuilding the FAISS index without re-embedding."""
        rows = self.db.execute("SELECT rowid, vector FROM vectors ORDER BY rowid").fetchall()
        return np.array([rowid for rowid, _ in rows], dtype=np.int64), _matrix([blob for _, blob in rows], dimension)

    def keyword_search(self, text: str, k: int, filters: dict[str, Any] | None = None) -> list[tuple[int, float]]:
        """(document rowid, BM25 score) of the K best keyword matches among documents passing FILTERS, best first."""
        query = keyword_query(text)
        if query is None:
            return []
        passing = ""
        values: list[Any] = []
        if filters:  # only then: the subquery makes FTS5 rank every match row by row (25× slower)
            where, values = filter_sql(filters)
            passing = f"AND rowid IN (SELECT rowid FROM documents WHERE {where}) "
        rows = self.db.execute(
            "SELECT rowid, -bm25(documents_fts) FROM documents_fts "
            f"WHERE documents_fts MATCH ? {passing}ORDER BY rank LIMIT ?",
            [query, *values, k],
        )
        return [(rowid, score) for rowid, score in rows]

    def matching_documents(self, filters: dict[str, Any]) -> set[int]:
        """Rowids of the documents whose fields pass FILTERS (see `filter_sql`)."""
        where, values = filter_sql(filters)
        return {rowid for (rowid,) in self.db.execute(f"SELECT rowid FROM documents WHERE {where}", values)}

    def problems(self, dimension: int) -> list[str]:
        """Everything wrong inside docs.sqlite: file integrity, counts, vectors, keyword index."""
        found = []
        integrity = self.db.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            found.append(f"SQLite integrity check: {integrity}")
        if self.manifest().get("documents") != self.count():
            found.append(f"the manifest counts {self.manifest().get('documents')} documents; there are {self.count()}")
        bare = self.documents_without_vectors()
        if bare:
            found.append(f"{len(bare)} documents have no vector (an interrupted run), e.g. {bare[0].id!r}")
        orphans = self.db.execute(
            "SELECT count(*) FROM vectors WHERE document NOT IN (SELECT rowid FROM documents)"
        ).fetchone()[0]
        if orphans:
            found.append(f"{orphans} vectors belong to no document")
        _, vectors = self.vectors(dimension)
        off = int((np.abs(np.linalg.norm(vectors, axis=1) - 1.0) > 1e-3).sum()) if len(vectors) else 0
        if off:
            found.append(f"{off} vectors are not of unit length")
        if self.read_only:  # FTS5's integrity check is a write command, which read-only storage refuses
            return found
        try:
            self.db.execute("INSERT INTO documents_fts(documents_fts) VALUES ('integrity-check')")
        except sqlite3.DatabaseError:
            found.append("the keyword index is out of step with the documents")
        return found

    def documents_without_vectors(self) -> list[StoredDocument]:
        rows = self.db.execute(
            "SELECT rowid, id, text, fields FROM documents WHERE rowid NOT IN (SELECT document FROM vectors)"
        )
        return [StoredDocument(rowid, doc_id, text, json.loads(fields)) for rowid, doc_id, text, fields in rows]

    def repair(self) -> None:
        """Rebuild what SQLite can rebuild alone: the keyword index, the count, and drop orphan vectors."""
        with self.transaction():
            self.db.execute("DELETE FROM vectors WHERE document NOT IN (SELECT rowid FROM documents)")
            self.db.execute("INSERT INTO documents_fts(documents_fts) VALUES ('rebuild')")

    def close(self) -> None:
        self.db.close()


def filter_sql(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE condition on documents.fields: {field: value} for equality, {field: {"in": [values]}} for any of them.

    Conditions on several fields must all hold; a document without the field never matches.
    """
    if not isinstance(filters, dict):
        raise InvalidFilterError(f"a filter is an object of field: value pairs, got {filters!r}")
    conditions, values = ["1"], []
    for name, wanted in filters.items():
        if not isinstance(name, str) or not name or '"' in name:
            raise InvalidFilterError(f"invalid filter field name {name!r}")
        path = f'$."{name}"'
        if isinstance(wanted, dict):
            if list(wanted) != ["in"] or not isinstance(wanted["in"], list) or not wanted["in"]:
                raise InvalidFilterError(f'filter on {name!r}: use a value or {{"in": [values]}}, got {wanted!r}')
            choices = wanted["in"]
        else:
            choices = [wanted]
        if len(choices) > MAX_FILTER_VALUES:
            raise InvalidFilterError(f"filter on {name!r}: at most {MAX_FILTER_VALUES} values, got {len(choices)}")
        for choice in choices:
            if not isinstance(choice, (str, int, float)):  # bool is an int: JSON true is stored as 1
                raise InvalidFilterError(f"filter on {name!r}: values are strings, numbers or booleans, got {choice!r}")
        conditions.append(f"json_extract(fields, ?) IN ({_marks(choices)})")
        values += [path, *choices]
    return " AND ".join(conditions), values


def on_read_only_storage(path: Path) -> bool:
    """Whether the database at PATH exists where nothing can be written (a read-only mount, say)."""
    return path.exists() and not os.access(path.parent, os.W_OK)


def _connect(path: Path) -> sqlite_utils.Database:
    if on_read_only_storage(path):
        # Read-only storage: a WAL reader could not create its shared-memory file there, and no writer can
        # change the database, so SQLite may read it as immutable.
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    else:
        # Writers take the index's file lock first, so waiting here is only for WAL checkpoints: be patient.
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    return sqlite_utils.Database(connection)


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _chunks(values: Sequence[Any], size: int = 10_000) -> list[list[Any]]:
    return [list(values[start : start + size]) for start in range(0, len(values), size)]


def _matrix(blobs: list[bytes], dimension: int) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dimension)
