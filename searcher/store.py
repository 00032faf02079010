"""The document store: one SQLite file holding documents, their vectors, a BM25 index and the manifest.

SQLite is the source of truth; the FAISS file is derived from the `vectors` table. A document has one
vector for its text and one per alternative phrasing; a vector's rowid is its FAISS id.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from .errors import IndexCorruptError

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

# Porter stemming over unicode61 words: "indexes" finds "indexing".
FTS_TOKENIZER = "porter"


@dataclass(frozen=True)
class StoredDocument:
    """A document as stored: its rowid, external id, text and metadata."""

    rowid: int
    id: str
    text: str
    fields: dict[str, Any]


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def keyword_query(text: str) -> str | None:
    """An FTS5 query matching any word of TEXT; every word is quoted, so no user text is FTS syntax."""
    words = dict.fromkeys(re.findall(r"\w+", text.lower()))
    return " OR ".join(f'"{word}"' for word in words) or None


class DocumentStore:
    """Documents, vectors, BM25 index and manifest in `docs.sqlite`, written in transactions."""

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
        self.db = db
        self.path = path

    @classmethod
    def create(cls, path: Path, manifest: dict[str, Any]) -> DocumentStore:
        db = sqlite_utils.Database(path)
        db.enable_wal()
        with db.conn:
            db.conn.executescript(SCHEMA)
        # Triggers keep the BM25 index in step with every insert, update and delete of a document.
        db["documents"].enable_fts(["text"], fts_version="FTS5", create_triggers=True, tokenize=FTS_TOKENIZER)
        store = cls(db, path)
        store.update_manifest(manifest)
        return store

    @classmethod
    def open(cls, path: Path) -> DocumentStore:
        try:
            db = sqlite_utils.Database(path)
            tables = set(db.table_names())
        except sqlite3.DatabaseError as error:
            raise IndexCorruptError(f"{path}: not a readable index database ({error})") from None
        if not {"documents", "vectors", "manifest", "documents_fts"} <= tables:
            raise IndexCorruptError(f"{path}: not a searcher index database (tables: {', '.join(sorted(tables)) or 'none'})")
        return cls(db, path)

    def manifest(self) -> dict[str, Any]:
        return {row["key"]: json.loads(row["value"]) for row in self.db["manifest"].rows}

    def update_manifest(self, values: dict[str, Any]) -> None:
        with self.db.conn:
            self._write_manifest(values)

    def _write_manifest(self, values: dict[str, Any]) -> None:
        self.db.conn.executemany(
            "INSERT INTO manifest (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(key, json.dumps(value)) for key, value in values.items()],
        )

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM documents").fetchone()[0]

    def upsert_documents(self, documents: Sequence[tuple[str, str, dict[str, Any]]]) -> tuple[list[int], int, list[int]]:
        """Insert or replace (id, text, fields) documents in one transaction, dropping replaced documents' vectors.

        Returns the rowids in input order, how many ids were new, and the rowids of the dropped vectors.
        A replaced document keeps its rowid.
        """
        ids = [document_id for document_id, _, _ in documents]
        with self.db.conn:
            existing = self._existing_ids(ids)
            rowids = [
                self.db.execute(
                    UPSERT, (document_id, text, json.dumps(fields, ensure_ascii=False), content_hash(text))
                ).fetchone()[0]
                for document_id, text, fields in documents
            ]
            replaced = [rowid for rowid, document_id in zip(rowids, ids) if document_id in existing]
            dropped = self._vector_ids_of(replaced)
            self.db.execute(f"DELETE FROM vectors WHERE document IN ({_marks(replaced)})", replaced)
            self._write_manifest({"documents": self.count()})
        return rowids, len(ids) - len(existing), dropped

    def add_vectors(self, owners: Sequence[tuple[int, str | None]], vectors: np.ndarray) -> list[int]:
        """Store vectors for (document rowid, phrasing or None) owners in one transaction; returns their ids."""
        with self.db.conn:
            return [
                self.db.execute(
                    "INSERT INTO vectors (document, phrasing, vector) VALUES (?, ?, ?) RETURNING rowid",
                    (document, phrasing, np.asarray(vector, dtype=np.float32).tobytes()),
                ).fetchone()[0]
                for (document, phrasing), vector in zip(owners, vectors)
            ]

    def _existing_ids(self, ids: Sequence[str]) -> set[str]:
        return {row[0] for row in self.db.execute(f"SELECT id FROM documents WHERE id IN ({_marks(ids)})", list(ids))}

    def _vector_ids_of(self, documents: Sequence[int]) -> list[int]:
        rows = self.db.execute(f"SELECT rowid FROM vectors WHERE document IN ({_marks(documents)})", list(documents))
        return [row[0] for row in rows]

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

    def document_vectors(self, documents: Sequence[int], dimension: int) -> tuple[list[tuple[int, str | None]], np.ndarray]:
        """Every vector of the given documents, with its (document rowid, phrasing) owner."""
        rows = self.db.execute(
            f"SELECT document, phrasing, vector FROM vectors WHERE document IN ({_marks(documents)})", list(documents)
        ).fetchall()
        return [(document, phrasing) for document, phrasing, _ in rows], _matrix([blob for _, _, blob in rows], dimension)

    def vector_ids(self) -> np.ndarray:
        return np.fromiter((row[0] for row in self.db.execute("SELECT rowid FROM vectors ORDER BY rowid")), dtype=np.int64)

    def vectors(self, dimension: int) -> tuple[np.ndarray, np.ndarray]:
        """All (vector ids, vectors) in id order, for rebuilding the FAISS index without re-embedding."""
        rows = self.db.execute("SELECT rowid, vector FROM vectors ORDER BY rowid").fetchall()
        return np.array([rowid for rowid, _ in rows], dtype=np.int64), _matrix([blob for _, blob in rows], dimension)

    def keyword_search(self, text: str, k: int) -> list[tuple[int, float]]:
        """(document rowid, BM25 score) of the K best keyword matches, best first."""
        query = keyword_query(text)
        if query is None:
            return []
        rows = self.db.execute(
            "SELECT rowid, -bm25(documents_fts) FROM documents_fts WHERE documents_fts MATCH ? ORDER BY rank LIMIT ?",
            [query, k],
        )
        return [(rowid, score) for rowid, score in rows]

    def close(self) -> None:
        self.db.close()


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _matrix(blobs: list[bytes], dimension: int) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dimension)
