"""The document store: one SQLite file holding documents, their vectors, a BM25 index and the manifest.

SQLite is the source of truth; the FAISS file is derived from the `vectors` table. A document has one
vector per passage of its text (one passage, the whole text, unless it is long) and one per alternative
phrasing; a vector's rowid is its FAISS id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .database import sqlite_utils
from .errors import IndexCorruptError, IndexVersionError, IndexWriteError, InvalidFilterError
from .paths import STAGED_DOCS_FILE, sync_directory

# Which vectors each write transaction removed: readers apply a write to their vectors in memory from it and
# from the vectors added since (rowids only grow), instead of loading a whole new file (see `vectorfile`).
REMOVALS_TABLE = (
    "CREATE TABLE IF NOT EXISTS vector_removals (vector INTEGER PRIMARY KEY, generation INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS vector_removals_generation ON vector_removals(generation)",
)

# AUTOINCREMENT: a deleted row's rowid (a FAISS id) is never handed to another row.
SCHEMA = """
CREATE TABLE documents (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    fields TEXT NOT NULL,
    hash TEXT NOT NULL,
    heading INTEGER NOT NULL DEFAULT 0  -- characters of title (or FAQ question) the text starts with
);
CREATE TABLE vectors (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    document INTEGER NOT NULL REFERENCES documents(rowid) ON DELETE CASCADE,
    phrasing TEXT,  -- NULL: the vector of a passage of the document's text; else of this alternative phrasing
    vector BLOB NOT NULL,
    span_start INTEGER,  -- the passage's [start, end) in the text, in characters; NULL for a phrasing
    span_end INTEGER
);
CREATE INDEX vectors_document ON vectors(document);
CREATE TABLE manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + "".join(f"{statement};\n" for statement in REMOVALS_TABLE)

UPSERT = """
INSERT INTO documents (id, text, fields, hash, heading) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET text = excluded.text, fields = excluded.fields, hash = excluded.hash,
    heading = excluded.heading
RETURNING rowid
"""
# What format 1 lacked: passages' spans (its vectors were all of whole texts, or of phrasings) and headings.
FORMAT_2_COLUMNS = {
    "vectors": ("span_start INTEGER", "span_end INTEGER"),
    "documents": ("heading INTEGER NOT NULL DEFAULT 0",),
}

# json_each gives a boolean's atom as 1 or 0: its type says which JSON value it was.
JSON_BOOLEANS = {"true": True, "false": False}
BUSY_TIMEOUT_S = 60
FORMAT = 2  # layout of docs.sqlite; raised when a newer searcher changes it

# Porter stemming over unicode61 words: "indexes" finds "indexing".
FTS_TOKENIZER = "porter"
MAX_FILTER_VALUES = 1000  # values in one {"in": [...]} filter
MAX_SQLITE_INTEGER = 2**63 - 1  # SQLite's integers are 64-bit: a larger LIMIT cannot even be passed to it
# SQLite's result codes for a damaged file: a page that is not what it should be, or no database at all.
DAMAGE_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
INTEGRITY_ERRORS = 10  # problems SQLite's integrity check lists at most
SALVAGE_CHUNK = 512  # rows a repair reads at once; a chunk meeting a damaged page is read again row by row
VECTOR_SCAN = 10_000  # vectors checked at once, so that checking a large index does not hold all its vectors
UNIT_TOLERANCE = 1e-3  # how far a stored vector's length may be from 1
# How many vectors a document has of its text's passages, and of its alternative phrasings.
VECTOR_COUNTS = (
    "(SELECT count(*) FROM vectors WHERE document = documents.rowid AND phrasing IS NULL), "
    "(SELECT count(*) FROM vectors WHERE document = documents.rowid AND phrasing IS NOT NULL)"
)
# Put around the words of a text that a keyword query matches (see `keyword_matches`): characters of Unicode's
# private use area, which no text searcher indexes has a reason to hold.
MATCH_OPEN, MATCH_CLOSE = "\ue000", "\ue001"


class StoredRow(NamedTuple):
    """A document as `upsert_documents` writes it."""

    id: str
    text: str
    fields: dict[str, Any]
    content: str  # `content_hash` of what is embedded
    heading: int = 0  # characters of heading the text starts with


@dataclass(frozen=True)
class VectorOwner:
    """What a stored vector embeds: a passage of a document's text, or one of its alternative phrasings."""

    document: int  # rowid
    phrasing: str | None = None
    span: tuple[int, int] | None = None  # a passage's [start, end) in the text; None: a phrasing, or older index


def document_owners(rowid: int, spans: Sequence[tuple[int, int]], phrasings: Sequence[str]) -> list[VectorOwner]:
    """The owners of a document's vectors, in the order they are embedded: its passages, then its phrasings."""
    return [
        *(VectorOwner(rowid, None, span) for span in spans),
        *(VectorOwner(rowid, phrasing) for phrasing in phrasings),
    ]


@dataclass(frozen=True)
class Changes:
    """What write transactions did to the vectors after some generation, as of GENERATION."""

    generation: int
    removed: np.ndarray  # vector ids
    added_ids: np.ndarray
    added: np.ndarray  # their vectors


@dataclass(frozen=True)
class StoredState:
    """What is stored of a document, to tell whether a record changes it."""

    content: str  # hash
    fields: str  # JSON
    heading: int  # characters of heading the text starts with
    passages: int  # vectors of its text
    phrasings: int  # vectors of its alternative phrasings


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


def document_key(document_id: str, content: str, fields: str, phrasings: int, heading: int) -> int:
    """64 bits naming a document's exact stored state: id, content hash, fields JSON, number of phrasings and
    length of heading."""
    state = "\x1f".join([document_id, content, fields, str(phrasings), str(heading)]).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(state, digest_size=8).digest(), "little", signed=True)


def fields_json(fields: dict[str, Any]) -> str:
    return json.dumps(fields, ensure_ascii=False, sort_keys=True)


def keyword_query(text: str) -> str | None:
    """An FTS5 query matching any word of TEXT; every word is quoted, so no user text is FTS syntax."""
    words = dict.fromkeys(re.findall(r"\w+", text.lower()))
    return " OR ".join(f'"{word}"' for word in words) or None


@dataclass(frozen=True)
class Salvage:
    """What a repair of a damaged file kept: documents the manifest counted, and those that could be read."""

    counted: int
    kept: int


class DocumentStore:
    """Documents, vectors, BM25 index and manifest in `docs.sqlite`, written in transactions.

    A damaged page of the file, wherever a read meets it, raises IndexCorruptError (see `_Cursor`).
    """

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
        self.db = db
        self.path = path
        self.read_only = on_read_only_storage(path)
        self._manifest: tuple[tuple[int, int], dict[str, Any]] | None = None  # (as of, values): see `manifest`
        self._read_format()

    def _read_format(self) -> None:
        """How to read spans and headings: from their columns, or as the constants a format-1 file implies."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(vectors)")}
        self._has_spans = "span_start" in columns
        self._logs_removals = "vector_removals" in set(self.db.table_names())
        self._spans = "span_start, span_end" if self._has_spans else "NULL, NULL"
        self._heading = "heading" if self._has_spans else "0"

    def upgrade(self) -> None:
        """Add what a format-1 file lacks (writers only, under the writer lock); nothing is embedded again."""
        if self._has_spans and self._logs_removals:
            return  # format 2 when opened (or last upgraded): its columns and table are never taken away
        tables = {
            table: {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")} for table in FORMAT_2_COLUMNS
        }
        missing = [
            (table, column)
            for table, columns in FORMAT_2_COLUMNS.items()
            for column in columns
            if column.split()[0] not in tables[table]
        ]
        # Even with nothing missing (another process upgraded the file since this one read its format), the
        # format is read again below: spans and removals are then read and logged as that process does.
        with self._write_errors(), self.db.conn:
            for table, column in missing:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            for statement in REMOVALS_TABLE:
                self.db.execute(statement)
            _write_manifest(self.db.conn, {"format": FORMAT})
        self._read_format()

    @classmethod
    def create(cls, path: Path, manifest: dict[str, Any]) -> DocumentStore:
        """A new store at PATH, made under another name and renamed into place whole, so that no reader (nor a
        second process creating the same index) sees a half-made one; the caller holds the writer lock."""
        staged = _new_database(path.with_name(STAGED_DOCS_FILE))
        try:
            with staged.conn:
                _write_manifest(staged.conn, manifest)
        finally:
            staged.close()
        _replace_database(path.with_name(STAGED_DOCS_FILE), path)
        return cls(_connect(path), path)

    @classmethod
    def open(cls, path: Path) -> DocumentStore:
        try:
            db = _connect(path)
            tables = set(db.table_names())
        except sqlite3.DatabaseError as error:
            raise IndexCorruptError(f"{path}: not a readable index database ({error})") from None
        except IndexCorruptError as error:
            raise IndexCorruptError(f"{path}: not a readable index database ({error.__cause__})") from None
        if not {"documents", "vectors", "manifest", "documents_fts"} <= tables:
            raise IndexCorruptError(
                f"{path}: not a searcher index database (tables: {', '.join(sorted(tables)) or 'none'})"
            )
        store = cls(db, path)
        stored_format = store.manifest_value("format", FORMAT)
        if isinstance(stored_format, int) and stored_format > FORMAT:
            raise IndexVersionError(
                f"{path} was written by searcher {store.manifest_value('searcher_version', None)} in a newer format "
                f"({stored_format}; this searcher reads {FORMAT}): upgrade searcher"
            )
        return store

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction that raises the generation; the writing methods below run inside one.

        A full disk or read-only file becomes an IndexWriteError, with nothing half-written.
        """
        with self._write_errors(), self.db.conn:
            yield
            _write_manifest(self.db.conn, {"documents": self.count(), "generation": self.generation() + 1})

    @contextmanager
    def _write_errors(self) -> Iterator[None]:
        """A full disk or read-only file, raised by SQLite as OperationalError, becomes an IndexWriteError."""
        try:
            yield
        except sqlite3.OperationalError as error:
            raise IndexWriteError(f"cannot write {self.path}: {error}") from None

    def manifest(self) -> dict[str, Any]:
        """Every manifest key with its value (see `manifest.Manifest` for what they mean).

        Kept until a commit, this connection's (its count of changed rows grows) or another's (the file's
        data_version changes): every search reads the manifest, and decoding it was half a dense search's time.
        """
        as_of = (self.db.execute("PRAGMA data_version").fetchone()[0], self.db.conn.total_changes)
        if self._manifest is None or self._manifest[0] != as_of:
            rows = self.db.execute("SELECT key, value FROM manifest")
            self._manifest = (as_of, {key: self._decoded(key, value) for key, value in rows})
        return dict(self._manifest[1])

    def manifest_value(self, key: str, default: Any) -> Any:
        row = self.db.execute("SELECT value FROM manifest WHERE key = ?", (key,)).fetchone()
        return self._decoded(key, row[0]) if row else default

    def _decoded(self, key: str, value: str) -> Any:
        try:
            return json.loads(value)
        except ValueError:
            raise IndexCorruptError(f"{self.path}: the manifest's {key!r} is not JSON ({value[:40]!r})") from None

    def update_manifest(self, values: dict[str, Any]) -> None:
        """Record facts about the index (not its contents): the generation stays as it is."""
        with self._write_errors(), self.db.conn:
            _write_manifest(self.db.conn, values)

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM documents").fetchone()[0]

    def vector_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM vectors").fetchone()[0]

    def stored(self, ids: Sequence[str]) -> dict[str, StoredState]:
        """What is stored of each of the given ids that is."""
        rows = self._select_in(
            f"SELECT id, hash, fields, {self._heading}, {VECTOR_COUNTS} FROM documents WHERE id IN ({{}})",
            ids,
        )
        return {row[0]: StoredState(*row[1:]) for row in rows}

    def stored_document(self, document_id: str) -> tuple[StoredDocument, int, list[str]] | None:
        """The document with DOCUMENT_ID, its heading's length and its alternative phrasings; None if absent."""
        row = self.db.execute("SELECT rowid FROM documents WHERE id = ?", [document_id]).fetchone()
        return self.embedding_inputs([row[0]])[0] if row else None

    def field_values(self, limit: int) -> dict[str, list[Any]]:
        """The distinct values of each stored field whose values are all scalars (text, numbers, booleans) and
        at most LIMIT apart from null, sorted: the choices a filter on it can offer."""
        rows = self.db.execute(
            """
            WITH field_values AS (
                SELECT DISTINCT field.key AS name, field.type AS type, field.atom AS value
                FROM documents, json_each(documents.fields) AS field WHERE field.type != 'null'
            )
            SELECT name, type, value FROM field_values WHERE name IN (
                SELECT name FROM field_values GROUP BY name
                HAVING count(*) <= ? AND sum(type IN ('object', 'array')) = 0
            )
            ORDER BY name, value
            """,
            [limit],
        )
        values: dict[str, list[Any]] = {}
        for name, kind, value in rows:
            values.setdefault(name, []).append(JSON_BOOLEANS.get(kind, value))
        return values

    def document_keys(self) -> np.ndarray:
        """`document_key` of every stored document that has its text's vectors, sorted (int64)."""
        rows = self.db.execute(f"SELECT id, hash, fields, {self._heading}, {VECTOR_COUNTS} FROM documents")
        # row[4] and row[5]: how many vectors of passages and of phrasings
        keys = (document_key(row[0], row[1], row[2], row[5], row[3]) for row in rows if row[4])
        return np.sort(np.fromiter(keys, dtype=np.int64))

    def upsert_documents(
        self, documents: Sequence[StoredRow], reembed: Collection[str] = ()
    ) -> tuple[list[int], list[int]]:
        """Insert or replace documents.

        A replaced document keeps its rowid; the vectors of the ids in REEMBED are dropped, to be embedded
        again. Returns the rowids in input order and the ids of the dropped vectors.
        """
        rowids = [
            self.db.execute(
                UPSERT, (document.id, document.text, fields_json(document.fields), document.content, document.heading)
            ).fetchone()[0]
            for document in documents
        ]
        return rowids, self.drop_vectors(
            [rowid for rowid, document in zip(rowids, documents, strict=True) if document.id in reembed]
        )

    def delete_documents(self, ids: Sequence[str]) -> tuple[list[str], list[int]]:
        """Delete documents by external id; returns the ids found and their dropped vector ids."""
        rows = self._select_in("SELECT rowid, id FROM documents WHERE id IN ({})", ids)
        rowids = [rowid for rowid, _ in rows]
        dropped = self.drop_vectors(rowids)
        for chunk in _chunks(rowids):
            self.db.execute(f"DELETE FROM documents WHERE rowid IN ({_marks(chunk)})", chunk)
        return [document_id for _, document_id in rows], dropped

    def add_vectors(self, owners: Sequence[VectorOwner], vectors: np.ndarray) -> list[int]:
        """Store the VECTORS of their OWNERS (inside the caller's transaction); returns their ids."""
        return [
            self.db.execute(
                "INSERT INTO vectors (document, phrasing, vector, span_start, span_end) VALUES (?, ?, ?, ?, ?) "
                "RETURNING rowid",
                (
                    owner.document,
                    owner.phrasing,
                    np.asarray(vector, dtype=np.float32).tobytes(),
                    *(owner.span or (None, None)),
                ),
            ).fetchone()[0]
            for owner, vector in zip(owners, vectors, strict=True)
        ]

    def generation(self) -> int:
        """A counter raised by every write transaction: the state a FAISS file was saved from."""
        return self.manifest_value("generation", 0)

    def drop_vectors(self, documents: Sequence[int]) -> list[int]:
        """Delete every vector of the DOCUMENTS (rowids), inside the caller's transaction, logged as removed by
        it; returns the ids of those dropped."""
        dropped = [row[0] for row in self._select_in("SELECT rowid FROM vectors WHERE document IN ({})", documents)]
        for chunk in _chunks(documents):
            self.db.execute(f"DELETE FROM vectors WHERE document IN ({_marks(chunk)})", chunk)
        if self._logs_removals:
            generation = self.generation() + 1  # the one this transaction commits (see `transaction`)
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO vector_removals (vector, generation) VALUES (?, ?)",
                [(vector, generation) for vector in dropped],
            )
        return dropped

    def changes_since(self, generation: int, last_id: int, dimension: int) -> Changes | None:
        """What writes after GENERATION did to the vectors: the ids they removed and the vectors added with ids
        past LAST_ID, read in one snapshot. None if the removals are no longer known that far back (pruned
        by a compaction, or a file written before they were logged)."""
        outer = not self.db.conn.in_transaction
        if outer:
            self.db.execute("BEGIN")  # one snapshot: a writer committing meanwhile is seen whole or not at all
        try:
            now = self.generation()
            if generation == now:
                return Changes(now, np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, dimension), np.float32))
            if not self._logs_removals or generation < self.manifest_value("removals_horizon", 0):
                return None
            removed = self.db.execute("SELECT vector FROM vector_removals WHERE generation > ?", (generation,))
            rows = self.db.execute(
                "SELECT rowid, vector FROM vectors WHERE rowid > ? ORDER BY rowid", (last_id,)
            ).fetchall()
            return Changes(
                now,
                np.fromiter((row[0] for row in removed), dtype=np.int64),
                np.array([row[0] for row in rows], dtype=np.int64),
                _matrix([row[1] for row in rows], dimension),
            )
        finally:
            if outer:
                self.db.execute("COMMIT")

    def record_compaction(self, generation: int, previous: int | None) -> None:
        """Record that the vector file now reflects GENERATION; the removals a reader of the PREVIOUS file
        (or a newer one) no longer needs are forgotten."""
        horizon = previous or 0
        with self._write_errors(), self.db.conn:
            if self._logs_removals:
                self.db.execute("DELETE FROM vector_removals WHERE generation <= ?", (horizon,))
            _write_manifest(self.db.conn, {"vectors_generation": generation, "removals_horizon": horizon})

    def _select_in(self, sql: str, values: Sequence[Any]) -> list[tuple]:
        """Rows of SQL with its `IN ({})` filled with VALUES, in chunks under SQLite's variable limit."""
        return [
            row for chunk in _chunks(values) for row in self.db.execute(sql.format(_marks(chunk)), chunk).fetchall()
        ]

    def documents(self, rowids: Sequence[int]) -> dict[int, StoredDocument]:
        rows = self.db.execute(
            f"SELECT rowid, id, text, fields FROM documents WHERE rowid IN ({_marks(rowids)})", list(rowids)
        )
        return {row[0]: self._document(*row) for row in rows}

    def _document(self, rowid: int, document_id: str, text: str, fields: str) -> StoredDocument:
        try:
            return StoredDocument(rowid, document_id, text, stored_fields(fields))
        except ValueError:
            raise IndexCorruptError(
                f"{self.path}: the fields of document {document_id!r} are not JSON; `searcher check --repair` "
                "resets them"
            ) from None

    def vector_owners(self, vector_ids: Sequence[int]) -> dict[int, VectorOwner]:
        """The owner of each of the vectors with the given ids."""
        rows = self.db.execute(
            f"SELECT rowid, document, phrasing, {self._spans} FROM vectors WHERE rowid IN ({_marks(vector_ids)})",
            list(vector_ids),
        )
        return {rowid: _owner(*owner) for rowid, *owner in rows}

    def document_vectors(self, documents: Sequence[int], dimension: int) -> tuple[list[VectorOwner], np.ndarray]:
        """Every vector of the given documents (rowids), with its owner."""
        rows = self.db.execute(
            f"SELECT document, phrasing, {self._spans}, vector FROM vectors WHERE document IN ({_marks(documents)})",
            list(documents),
        ).fetchall()
        return [_owner(*row[:4]) for row in rows], _matrix([row[4] for row in rows], dimension)

    def passage_spans(self, documents: Sequence[int]) -> dict[int, list[tuple[int, int]]]:
        """The spans of each of the DOCUMENTS' passages, in text order (none for an older index's documents)."""
        if not self._has_spans:
            return {}
        rows = self.db.execute(
            f"SELECT document, span_start, span_end FROM vectors WHERE document IN ({_marks(documents)}) "
            "AND span_start IS NOT NULL ORDER BY document, span_start",
            list(documents),
        )
        spans: dict[int, list[tuple[int, int]]] = {}
        for document, start, end in rows:
            spans.setdefault(document, []).append((start, end))
        return spans

    def keyword_matches(self, text: str, documents: Sequence[int]) -> dict[int, list[tuple[int, int]]]:
        """Where in each of the DOCUMENTS' texts the words of TEXT occur, as BM25 matches them (stemmed): FTS5's
        `highlight` with markers that are then taken out again."""
        query = keyword_query(text)
        if query is None or not documents:
            return {}
        rows = self.db.execute(
            "SELECT rowid, highlight(documents_fts, 0, ?, ?) FROM documents_fts WHERE documents_fts MATCH ? "
            f"AND rowid IN ({_marks(documents)})",
            [MATCH_OPEN, MATCH_CLOSE, query, *documents],
        ).fetchall()
        return {rowid: _marked_spans(marked) for rowid, marked in rows}

    def embedding_inputs(self, documents: Sequence[int]) -> list[tuple[StoredDocument, int, list[str]]]:
        """What the DOCUMENTS (rowids) are embedded from: each one, its heading's length and its phrasings."""
        stored = self.documents(documents)
        headings = dict(
            self.db.execute(
                f"SELECT rowid, {self._heading} FROM documents WHERE rowid IN ({_marks(documents)})", list(documents)
            )
        )
        phrasings: dict[int, list[str]] = {}
        for document, phrasing in self.db.execute(
            f"SELECT document, phrasing FROM vectors WHERE document IN ({_marks(documents)}) AND phrasing IS NOT NULL "
            "ORDER BY rowid",
            list(documents),
        ):
            phrasings.setdefault(document, []).append(phrasing)
        return [(stored[rowid], headings[rowid], phrasings.get(rowid, [])) for rowid in documents if rowid in stored]

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
        return (self._document(*row) for row in rows)

    def headings(self) -> Iterator[tuple[str, str]]:
        """(document id, heading) of every document whose text starts with a heading (a title, an FAQ question)."""
        rows = self.db.execute(f"SELECT id, substr(text, 1, {self._heading}) FROM documents WHERE {self._heading} > 0")
        return ((row[0], row[1]) for row in rows)

    def owned_vectors(self, dimension: int) -> Iterator[tuple[str, VectorOwner, np.ndarray]]:
        """Every stored vector with its document's external id and its owner."""
        rows = self.db.execute(
            f"SELECT documents.id, vectors.document, phrasing, {self._spans}, vector "
            "FROM vectors JOIN documents ON documents.rowid = vectors.document ORDER BY vectors.rowid"
        )
        return ((row[0], _owner(*row[1:5]), _matrix([row[5]], dimension)[0]) for row in rows)

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
        with self._filter_errors():
            rows = self.db.execute(
                "SELECT rowid, -bm25(documents_fts) FROM documents_fts "
                f"WHERE documents_fts MATCH ? {passing}ORDER BY rank LIMIT ?",
                [query, *values, min(k, MAX_SQLITE_INTEGER)],
            ).fetchall()
        return [(rowid, score) for rowid, score in rows]

    def matching_documents(self, filters: dict[str, Any]) -> set[int]:
        """Rowids of the documents whose fields pass FILTERS (see `filter_sql`)."""
        where, values = filter_sql(filters)
        with self._filter_errors():
            return {rowid for (rowid,) in self.db.execute(f"SELECT rowid FROM documents WHERE {where}", values)}

    @contextmanager
    def _filter_errors(self) -> Iterator[None]:
        """Fields that are not JSON, which SQLite's JSON functions refuse to filter, as an IndexCorruptError."""
        try:
            yield
        except sqlite3.OperationalError as error:
            if "malformed JSON" not in str(error):
                raise
            raise IndexCorruptError(
                f"{self.path}: documents whose fields are not JSON cannot be filtered; `searcher check --repair` "
                "rewrites them"
            ) from None

    def problems(self, dimension: int) -> list[str]:
        """Everything wrong inside an undamaged docs.sqlite (see `damage`): counts, fields, vectors, keyword index."""
        found = []
        if self.manifest_value("documents", None) != self.count():
            found.append(
                f"the manifest counts {self.manifest_value('documents', None)} documents; there are {self.count()}"
            )
        bare = self.documents_without_vectors()
        if bare:
            found.append(f"{len(bare)} documents have no vector (an interrupted run), e.g. {bare[0].id!r}")
        orphans = self.db.execute(
            "SELECT count(*) FROM vectors WHERE document NOT IN (SELECT rowid FROM documents)"
        ).fetchone()[0]
        if orphans:
            found.append(f"{orphans} vectors belong to no document")
        unreadable = self.unreadable_fields()
        if unreadable:
            found.append(f"{len(unreadable)} documents have fields that are not valid JSON, e.g. {unreadable[0][1]!r}")
        damaged = self.damaged_vectors(dimension)
        if damaged:
            found.append(
                f"{len(damaged)} vectors are damaged (the wrong size, not of unit length, or of a passage outside its "
                f"text), e.g. of {damaged[0][2]!r}"
            )
        if self.read_only:  # FTS5's integrity check is a write command, which read-only storage refuses
            return found
        try:
            self.db.execute("INSERT INTO documents_fts(documents_fts) VALUES ('integrity-check')")
        except (sqlite3.DatabaseError, IndexCorruptError):  # FTS5 reports its own index as damaged
            found.append("the keyword index is out of step with the documents")
        return found

    def damage(self) -> list[str]:
        """What SQLite's integrity check finds wrong with the file itself (empty: nothing)."""
        try:
            found = [row[0] for row in self.db.execute(f"PRAGMA integrity_check({INTEGRITY_ERRORS})")]
        except IndexCorruptError as error:  # damage where the check itself starts reading
            return [str(error)]
        return [] if found == ["ok"] else [f"SQLite integrity check: {line}" for line in found]

    def documents_without_vectors(self) -> list[StoredDocument]:
        """The documents that have no vector of their text (those of phrasings do not count)."""
        rows = self.db.execute(
            "SELECT rowid, id, text, fields FROM documents "
            "WHERE rowid NOT IN (SELECT document FROM vectors WHERE phrasing IS NULL)"
        )
        return [self._document(*row) for row in rows]

    def unreadable_fields(self) -> list[tuple[int, str, str]]:
        """(rowid, id, fields) of the documents whose fields are not a JSON object, which SQLite cannot filter."""
        rows = self.db.execute(
            "SELECT rowid, id, fields FROM documents "
            "WHERE CASE WHEN json_valid(fields) THEN json_type(fields) != 'object' ELSE 1 END"
        )
        return rows.fetchall()

    def damaged_vectors(self, dimension: int) -> list[tuple[int, int, str]]:
        """(vector id, document rowid, document id) of the stored vectors that are not DIMENSION float32 values
        of unit length (a blob of another size, values that are not finite), or whose passage is not a span of
        its document's text."""
        outside = (
            "(span_start IS NULL) != (span_end IS NULL) OR span_start < 0 OR span_end <= span_start "
            "OR span_end > length(documents.text)"
            if self._has_spans
            else "0"
        )
        rows = self.db.execute(
            f"SELECT vectors.rowid, documents.rowid, documents.id, vectors.vector, coalesce({outside}, 0) "
            "FROM vectors JOIN documents ON documents.rowid = vectors.document"
        )
        damaged = []
        while chunk := rows.fetchmany(VECTOR_SCAN):
            whole = [row for row in chunk if isinstance(row[3], bytes) and len(row[3]) == 4 * dimension]
            damaged += [
                row[:3] for row in chunk if row[4] or not isinstance(row[3], bytes) or len(row[3]) != 4 * dimension
            ]
            if whole:
                lengths = np.linalg.norm(_matrix([row[3] for row in whole], dimension), axis=1)
                # Written so that NaN, which compares false with everything, counts as damaged.
                damaged += [
                    row[:3]
                    for row, length in zip(whole, lengths, strict=True)
                    if not row[4] and not abs(length - 1) <= UNIT_TOLERANCE
                ]
        return damaged

    def repair(self) -> tuple[list[str], list[str]]:
        """Rebuild what SQLite can rebuild alone: drop orphan vectors, rebuild the keyword index and the count,
        and write fields that are not JSON again as they read (NaN and infinity as null).

        Returns the ids of the documents whose fields were written again, and of those whose fields could not
        be read at all and are now empty.
        """
        rewritten, emptied = [], []
        with self.transaction():
            self.db.execute("DELETE FROM vectors WHERE document NOT IN (SELECT rowid FROM documents)")
            self.db.execute("INSERT INTO documents_fts(documents_fts) VALUES ('rebuild')")
            for rowid, document_id, fields in self.unreadable_fields():
                try:
                    readable = stored_fields(fields)
                    rewritten.append(document_id)
                except ValueError:
                    readable = {}
                    emptied.append(document_id)
                self.db.execute("UPDATE documents SET fields = ? WHERE rowid = ?", (fields_json(readable), rowid))
        return rewritten, emptied

    def salvage(self) -> Salvage:
        """Copy every row SQLite can still read into a new file that replaces docs.sqlite (writers only).

        The rows on a damaged page are lost, and the vectors of lost documents with them; every other row is
        kept with its rowid, so that the vector file can be rebuilt. Rowids already handed out are never
        handed out again.
        """
        manifest = self.db.execute("SELECT key, value FROM manifest").fetchall()  # nothing to keep without it
        last = {table: self._last_rowid(table) for table in ("documents", "vectors")}
        staged_path = self.path.with_name(STAGED_DOCS_FILE)
        staged = _new_database(staged_path)
        try:
            with self._write_errors(), staged.conn:
                kept: set[int] = set()
                for row in self._readable_rows(
                    f"SELECT rowid, id, text, fields, hash, {self._heading} FROM documents", last["documents"]
                ):
                    staged.conn.execute(
                        "INSERT INTO documents (rowid, id, text, fields, hash, heading) VALUES (?, ?, ?, ?, ?, ?)", row
                    )
                    kept.add(row[0])
                for row in self._readable_rows(
                    f"SELECT rowid, document, phrasing, vector, {self._spans} FROM vectors", last["vectors"]
                ):
                    if row[1] in kept:
                        staged.conn.execute(
                            "INSERT INTO vectors (rowid, document, phrasing, vector, span_start, span_end) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            row,
                        )
                staged.conn.execute("DELETE FROM sqlite_sequence")
                staged.conn.executemany("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", last.items())
                staged.conn.executemany("INSERT INTO manifest (key, value) VALUES (?, ?)", manifest)
                counted = self.manifest_value("documents", 0)
                _write_manifest(
                    staged.conn, {"documents": len(kept), "generation": self.generation() + 1, "format": FORMAT}
                )
        finally:
            staged.close()
        self.db.close()
        _replace_database(staged_path, self.path)
        self.db = _connect(self.path)
        self._read_format()
        return Salvage(counted, len(kept))

    def _last_rowid(self, table: str) -> int:
        """The highest rowid TABLE has handed out: AUTOINCREMENT's record of it, else the table's own."""
        with suppress(IndexCorruptError):
            row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
            if row:
                return row[0]
        return self.db.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()[0]

    def _readable_rows(self, select: str, last: int) -> Iterator[tuple]:
        """The rows of SELECT (from one table) up to rowid LAST that SQLite can read."""
        for start in range(1, last + 1, SALVAGE_CHUNK):
            end = min(start + SALVAGE_CHUNK, last + 1)
            try:
                yield from self.db.execute(f"{select} WHERE rowid >= ? AND rowid < ?", (start, end)).fetchall()
            except IndexCorruptError:
                for rowid in range(start, end):
                    with suppress(IndexCorruptError):
                        yield from self.db.execute(f"{select} WHERE rowid = ?", (rowid,)).fetchall()

    def close(self) -> None:
        self.db.close()


def stored_fields(fields: str) -> dict[str, Any]:
    """Stored fields JSON as a dict; NaN and infinity, which JSON cannot hold but older versions of searcher
    wrote, read as null, so that no answer carries them. A ValueError if it is not a JSON object."""
    parsed = json.loads(fields, parse_constant=lambda _constant: None)
    if not isinstance(parsed, dict):
        raise ValueError(f"stored fields are not a JSON object: {fields[:40]!r}")
    return parsed


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


def _write_manifest(connection: sqlite3.Connection, values: dict[str, Any]) -> None:
    connection.executemany(
        "INSERT INTO manifest (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(key, json.dumps(value)) for key, value in values.items()],
    )


@contextmanager
def _damage_errors(path: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as error:
        # The low byte is SQLite's primary result code; errors of sqlite3's own have none.
        if getattr(error, "sqlite_errorcode", 0) & 0xFF not in DAMAGE_CODES:
            raise
        raise IndexCorruptError(
            f"{path} is damaged ({error}); `searcher check --repair` keeps what can still be read"
        ) from error


class _Cursor(sqlite3.Cursor):
    """A cursor whose errors for a damaged file are IndexCorruptErrors, wherever SQLite meets the damage:
    often not when a statement starts but when a row on a damaged page is fetched."""

    connection: _Connection

    def execute(self, *arguments: Any) -> _Cursor:
        with _damage_errors(self.connection.path):
            return super().execute(*arguments)

    def executemany(self, *arguments: Any) -> _Cursor:
        with _damage_errors(self.connection.path):
            return super().executemany(*arguments)

    def fetchone(self) -> Any:
        with _damage_errors(self.connection.path):
            return super().fetchone()

    def fetchmany(self, *arguments: Any) -> list[Any]:
        with _damage_errors(self.connection.path):
            return super().fetchmany(*arguments)

    def fetchall(self) -> list[Any]:
        with _damage_errors(self.connection.path):
            return super().fetchall()

    def __next__(self) -> Any:
        with _damage_errors(self.connection.path):
            return super().__next__()


class _Connection(sqlite3.Connection):
    """A connection whose statements run on `_Cursor`s (sqlite3's own `execute` would bypass `cursor`)."""

    path = ""

    def cursor(self, factory: Any = _Cursor) -> Any:
        return super().cursor(factory)

    def execute(self, *arguments: Any) -> _Cursor:
        return self.cursor().execute(*arguments)

    def executemany(self, *arguments: Any) -> _Cursor:
        return self.cursor().executemany(*arguments)


def _connect(path: Path) -> sqlite_utils.Database:
    if on_read_only_storage(path):
        # Read-only storage: a WAL reader could not create its shared-memory file there, and no writer can
        # change the database, so SQLite may read it as immutable.
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, factory=_Connection)
    else:
        # Writers take the index's file lock first, so waiting here is only for WAL checkpoints: be patient.
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, factory=_Connection)
    connection.path = str(path)
    return sqlite_utils.Database(connection)


def _new_database(path: Path) -> sqlite_utils.Database:
    """An empty store at PATH, in place of whatever an interrupted writer left there."""
    try:
        for leftover in (path, *_side_files(path)):
            leftover.unlink(missing_ok=True)
        db = _connect(path)
        db.enable_wal()
        with db.conn:
            db.conn.executescript(SCHEMA)
        # Triggers keep the BM25 index in step with every insert, update and delete of a document.
        db.table("documents").enable_fts(["text"], fts_version="FTS5", create_triggers=True, tokenize=FTS_TOKENIZER)
    except (OSError, sqlite3.OperationalError) as error:  # a full disk, say
        raise IndexWriteError(f"cannot write {path}: {getattr(error, 'strerror', None) or error}") from None
    return db


def _replace_database(staged: Path, path: Path) -> None:
    """Rename the closed database STAGED over PATH, durably.

    PATH's WAL files go first: SQLite would replay an old write-ahead log into the new file. A process that
    still has the old file open keeps reading it, with its own copies of them.
    """
    try:
        for side_file in _side_files(path):
            side_file.unlink(missing_ok=True)
        os.replace(staged, path)
        sync_directory(path.parent)
    except OSError as error:
        raise IndexWriteError(f"cannot write {path}: {error.strerror}") from None


def _side_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _owner(document: int, phrasing: str | None, start: int | None, end: int | None) -> VectorOwner:
    return VectorOwner(document, phrasing, None if start is None or end is None else (start, end))


def _marked_spans(marked: str) -> list[tuple[int, int]]:
    """The [start, end) spans, in the text without them, that MATCH_OPEN and MATCH_CLOSE enclose in MARKED."""
    spans, removed = [], 0
    for match in re.finditer(f"{MATCH_OPEN}(.*?){MATCH_CLOSE}", marked, re.DOTALL):
        start = match.start() - removed
        spans.append((start, start + len(match.group(1))))
        removed += len(MATCH_OPEN) + len(MATCH_CLOSE)
    return spans


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _chunks(values: Sequence[Any], size: int = 10_000) -> list[list[Any]]:
    return [list(values[start : start + size]) for start in range(0, len(values), size)]


def _matrix(blobs: list[bytes], dimension: int) -> np.ndarray:
    for blob in blobs:
        if len(blob) != 4 * dimension:
            raise IndexCorruptError(
                f"a stored vector is {len(blob)} bytes long, not {4 * dimension}; `searcher check --repair` "
                "embeds it again"
            )
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dimension)
