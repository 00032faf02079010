"""The document store: one SQLite file holding documents, their vectors and the index manifest.

SQLite is the source of truth; the FAISS file is derived from the vectors kept here.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from .errors import IndexCorruptError

# AUTOINCREMENT: a deleted document's rowid (its FAISS id) is never handed to another document.
SCHEMA = """
CREATE TABLE documents (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    fields TEXT NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

UPSERT = """
INSERT INTO documents (id, text, fields, hash, vector) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET
    text = excluded.text, fields = excluded.fields, hash = excluded.hash, vector = excluded.vector
RETURNING rowid
"""


@dataclass(frozen=True)
class StoredDocument:
    """A document as stored: its rowid (the FAISS id), external id, text and metadata."""

    rowid: int
    id: str
    text: str
    fields: dict[str, Any]


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DocumentStore:
    """Documents, vectors and manifest in `docs.sqlite`, written in one transaction per batch."""

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
        self.db = db
        self.path = path

    @classmethod
    def create(cls, path: Path, manifest: dict[str, Any]) -> DocumentStore:
        db = sqlite_utils.Database(path)
        db.enable_wal()
        with db.conn:
            db.conn.executescript(SCHEMA)
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
        if not {"documents", "manifest"} <= tables:
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

    def upsert(self, documents: Sequence[tuple[str, str, dict[str, Any]]], vectors: np.ndarray) -> tuple[list[int], int]:
        """Insert or replace (id, text, fields) documents with their vectors in one transaction.

        Returns the rowids in input order and how many ids were new. A replaced document keeps its rowid.
        """
        ids = [document_id for document_id, _, _ in documents]
        with self.db.conn:
            existing = self._existing_ids(ids)
            rowids = [
                self.db.execute(
                    UPSERT,
                    (document_id, text, json.dumps(fields, ensure_ascii=False), content_hash(text),
                     np.asarray(vector, dtype=np.float32).tobytes()),
                ).fetchone()[0]
                for (document_id, text, fields), vector in zip(documents, vectors)
            ]
            self._write_manifest({"documents": self.count()})
        return rowids, len(ids) - len(existing)

    def _existing_ids(self, ids: Sequence[str]) -> set[str]:
        placeholders = ",".join("?" * len(ids))
        return {row[0] for row in self.db.execute(f"SELECT id FROM documents WHERE id IN ({placeholders})", ids)}

    def documents(self, rowids: Sequence[int]) -> dict[int, StoredDocument]:
        placeholders = ",".join("?" * len(rowids))
        rows = self.db.execute(f"SELECT rowid, id, text, fields FROM documents WHERE rowid IN ({placeholders})", list(rowids))
        return {rowid: StoredDocument(rowid, doc_id, text, json.loads(fields)) for rowid, doc_id, text, fields in rows}

    def rowids(self) -> np.ndarray:
        return np.fromiter((row[0] for row in self.db.execute("SELECT rowid FROM documents ORDER BY rowid")), dtype=np.int64)

    def vectors(self, dimension: int) -> tuple[np.ndarray, np.ndarray]:
        """All (rowids, vectors) in rowid order, for rebuilding the FAISS index without re-embedding."""
        rows = self.db.execute("SELECT rowid, vector FROM documents ORDER BY rowid").fetchall()
        rowids = np.array([rowid for rowid, _ in rows], dtype=np.int64)
        vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), dimension)
        return rowids, vectors

    def close(self) -> None:
        self.db.close()
