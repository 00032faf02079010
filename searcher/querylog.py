"""The question log: what customers asked an index, what it answered, and their feedback on the answers.

It lives in `queries.sqlite` beside the index's `docs.sqlite`, a file of its own: logging a search never
waits for the index's writer, and the index's readers, which never write to `docs.sqlite`, write only here.
Rows older than the retention (90 days unless the index says otherwise) are deleted as new ones come in.
`LogWriter` is the server's way in: one thread per served index taking entries from a queue and writing
them in batches, so that a search never waits for the disk.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import LOG_DAYS
from .database import sqlite_utils
from .errors import ConfigError, EmptyQueryError, IndexWriteError, OutputError
from .paths import QUERY_LOG_FILE
from .sources import LONE_SURROGATE

if TYPE_CHECKING:
    from .search import Hit

log = logging.getLogger("searcher")
DAY_S = 86_400.0
BUSY_TIMEOUT_S = 10  # another process (a `searcher log --clear`, a second server) holding the file's write lock
# Log entries waiting for a served index's log writer, past which new ones are dropped (with a warning) rather
# than held in memory without bound while the disk is slow or full.
MAX_WAITING_ENTRIES = 10_000
WRITE_BATCH = 1_000  # entries one transaction of the log writer takes at most

COLUMNS = "time, query, mode, filters, hits, best_score, below_threshold"


@dataclass(frozen=True)
class LoggedQuery:
    """One question as asked and answered: when (unix seconds), its text, mode and filters, the hits returned
    as (document id, score) best first, the best score (None without hits), and whether that best hit scored
    under the index's calibrated threshold for the mode."""

    time: float
    query: str
    mode: str
    filters: dict[str, Any] | None
    hits: list[tuple[str, float]]
    best_score: float | None
    below_threshold: bool

    @classmethod
    def answered(
        cls, query: str, mode: str, filters: dict[str, Any] | None, hits: Sequence[Hit], when: float | None = None
    ) -> LoggedQuery:
        """QUERY's entry, with the HITS a search returned for it (best first)."""
        return cls(
            _now() if when is None else when,
            query,
            mode,
            filters,
            [(hit.id, float(hit.score)) for hit in hits],
            float(hits[0].score) if hits else None,
            bool(hits) and hits[0].below_threshold,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "query": self.query,
            "mode": self.mode,
            "filters": self.filters,
            "hits": [{"id": document, "score": score} for document, score in self.hits],
            "best_score": self.best_score,
            "below_threshold": self.below_threshold,
        }


@dataclass(frozen=True)
class Feedback:
    """Whether document ID answered QUERY, as a customer or agent said at TIME (unix seconds)."""

    time: float
    query: str
    id: str
    helpful: bool


def logged_queries(
    queries: Sequence[str], found: Sequence[Sequence[Hit]], mode: str, filters: dict[str, Any] | None
) -> list[LoggedQuery]:
    """The entries of QUERIES searched together, with the hits FOUND for each, all at the same time."""
    now = _now()
    return [LoggedQuery.answered(query, mode, filters, hits, now) for query, hits in zip(queries, found, strict=True)]


class QueryLog:
    """The `queries` and `feedback` tables of an index's queries.sqlite (WAL mode), and their retention."""

    def __init__(self, db: sqlite_utils.Database, path: Path, retention_days: float) -> None:
        self.db = db
        self.path = path
        self.retention_days = retention_days

    @classmethod
    def open(cls, index_path: Path, retention_days: float = LOG_DAYS) -> QueryLog:
        """The log of the index at INDEX_PATH, its file created if missing."""
        _check_days(retention_days)
        path = index_path / QUERY_LOG_FILE
        with _write_errors(path):
            db = sqlite_utils.Database(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S))
            db.enable_wal()
            with db.conn:
                db.table("queries").create(
                    {
                        "id": int,
                        "time": float,
                        "query": str,
                        "mode": str,
                        "filters": str,
                        "hits": str,
                        "best_score": float,
                        "below_threshold": int,
                    },
                    pk="id",
                    not_null={"time", "query", "mode", "hits", "below_threshold"},
                    if_not_exists=True,
                )
                db.table("queries").create_index(["time"], if_not_exists=True)
                db.table("feedback").create(
                    {"id": int, "time": float, "query": str, "document": str, "helpful": int},
                    pk="id",
                    not_null={"time", "query", "document", "helpful"},
                    if_not_exists=True,
                )
                db.table("feedback").create_index(["time"], if_not_exists=True)
        return cls(db, path, retention_days)

    def record(self, entries: Sequence[LoggedQuery]) -> None:
        """Store ENTRIES in one transaction, deleting the rows past the retention with them."""
        rows = [
            (
                entry.time,
                _text(entry.query),
                entry.mode,
                None if entry.filters is None else json.dumps(entry.filters, ensure_ascii=False),
                json.dumps([{"id": document, "score": score} for document, score in entry.hits]),
                entry.best_score,
                int(entry.below_threshold),
            )
            for entry in entries
        ]
        with _write_errors(self.path), self.db.conn:
            self.db.conn.executemany(f"INSERT INTO queries ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._delete_before(_now() - self.retention_days * DAY_S)

    def feedback(self, query: str, id: str, helpful: bool, time: float | None = None) -> None:
        """Record whether document ID answered QUERY (now, unless TIME says when)."""
        if not query.strip():
            raise EmptyQueryError("feedback needs the question it is about")
        if not id:
            raise ConfigError("feedback needs the id of the document it is about")
        when = _now() if time is None else time
        with _write_errors(self.path), self.db.conn:
            self.db.conn.execute(
                "INSERT INTO feedback (time, query, document, helpful) VALUES (?, ?, ?, ?)",
                (when, _text(query), _text(id), int(helpful)),
            )
            self._delete_before(_now() - self.retention_days * DAY_S)

    def entries(self, since: float | None = None) -> list[LoggedQuery]:
        """The logged questions, oldest first; only those asked at SINCE (unix seconds) or later, if given."""
        since_sql = "" if since is None else "WHERE time >= ?"
        values: list[float] = [] if since is None else [since]
        rows = self.db.execute(f"SELECT {COLUMNS} FROM queries {since_sql} ORDER BY time, id", values).fetchall()
        return [_logged_query(row) for row in rows]

    def latest(self, count: int, since: float | None = None) -> list[LoggedQuery]:
        """The COUNT questions logged last (at SINCE or later, if given), newest first."""
        since_sql = "" if since is None else "WHERE time >= ?"
        values: list[float] = [] if since is None else [since]
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM queries {since_sql} ORDER BY time DESC, id DESC LIMIT ?", [*values, count]
        )
        return [_logged_query(row) for row in rows.fetchall()]

    def first_hits(self) -> set[str]:
        """The ids of the documents that some logged question found first."""
        rows = self.db.execute("SELECT DISTINCT json_extract(hits, '$[0].id') FROM queries WHERE hits != '[]'")
        return {row[0] for row in rows}

    def feedback_entries(self) -> list[Feedback]:
        """Every feedback kept, oldest first."""
        rows = self.db.execute("SELECT time, query, document, helpful FROM feedback ORDER BY time, id").fetchall()
        return [Feedback(when, query, document, bool(helpful)) for when, query, document, helpful in rows]

    def helpful_pairs(self) -> list[dict[str, str]]:
        """Each (question, document) whose latest feedback says it helped, as {"query", "id"}: the pairs
        `searcher tune --pairs` learns from, in the order they were first given."""
        rows = self.db.execute(
            """
            SELECT query, document FROM (
                SELECT query, document, helpful, min(id) OVER pair AS first,
                       row_number() OVER (pair ORDER BY time DESC, id DESC) AS recency
                FROM feedback WINDOW pair AS (PARTITION BY query, document)
            )
            WHERE recency = 1 AND helpful = 1 ORDER BY first
            """
        ).fetchall()
        return [{"query": query, "id": document} for query, document in rows]

    def export_pairs(self, out: Path) -> int:
        """Write the helpful pairs to OUT as JSONL, one {"query", "id"} a line; returns how many."""
        pairs = self.helpful_pairs()
        try:
            out.write_text("".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs), encoding="utf-8")
        except OSError as error:
            raise OutputError(f"cannot write {out}: {error.strerror}") from None
        return len(pairs)

    def count(self) -> int:
        """How many questions the log holds."""
        return self.db.execute("SELECT count(*) FROM queries").fetchone()[0]

    def clear(self) -> int:
        """Delete every logged question and feedback; returns how many rows went."""
        with _write_errors(self.path), self.db.conn:
            return self._delete_before(None)

    def prune(self, days: float) -> int:
        """Delete the questions and feedback older than DAYS; returns how many rows went."""
        _check_days(days)
        with _write_errors(self.path), self.db.conn:
            return self._delete_before(_now() - days * DAY_S)

    def _delete_before(self, cutoff: float | None) -> int:
        """Delete the rows of both tables older than CUTOFF (all of them for None), in the caller's transaction."""
        before_sql = "" if cutoff is None else " WHERE time < ?"
        values: list[float] = [] if cutoff is None else [cutoff]
        return sum(
            self.db.conn.execute(f"DELETE FROM {table}{before_sql}", values).rowcount
            for table in ("queries", "feedback")
        )

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> QueryLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LogWriter:
    """One thread writing an index's QueryLog, opened on it at the first write: searches hand their entries
    over (`log`) and go on, and whatever is waiting when the thread is free goes in one transaction.

    Feedback goes through the same thread (SQLite connections belong to one), answered by a Future once
    stored. `close` writes what is waiting, then stops the thread.
    """

    max_waiting = MAX_WAITING_ENTRIES

    def __init__(self, index_path: Path, retention_days: float, name: str) -> None:
        _check_days(retention_days)
        self.index_path = index_path
        self.retention_days = retention_days
        self._work: queue.SimpleQueue[list[LoggedQuery] | tuple[Future[None], Feedback] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._dropped = 0
        self._query_log: QueryLog | None = None  # opened on the thread, at its first write
        self._thread = threading.Thread(target=self._serve, name=f"log-{name}", daemon=True)
        self._thread.start()

    def log(self, entries: list[LoggedQuery]) -> None:
        """Queue ENTRIES for writing; dropped, and counted in a warning, while MAX_WAITING_ENTRIES wait."""
        with self._lock:
            if self._waiting + len(entries) > self.max_waiting:
                self._dropped += len(entries)
                return
            self._waiting += len(entries)
        self._work.put(entries)

    def feedback(self, query: str, id: str, helpful: bool) -> Future[None]:
        """Queue feedback; the Future is done once it is stored (or holds why it could not be)."""
        stored: Future[None] = Future()
        self._work.put((stored, Feedback(_now(), query, id, helpful)))
        return stored

    def close(self) -> None:
        """Write everything queued, then stop."""
        self._work.put(None)
        self._thread.join()

    def _serve(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch: list[LoggedQuery] = []
                for item in self._taken():
                    if item is None:
                        stopping = True
                    elif isinstance(item, list):
                        batch += item
                    else:
                        self._write(batch)  # the entries queued before the feedback are stored before it
                        batch = []
                        self._store_feedback(*item)
                self._write(batch)
        finally:
            if self._query_log is not None:
                self._query_log.close()

    def _taken(self) -> Iterator[list[LoggedQuery] | tuple[Future[None], Feedback] | None]:
        """The next piece of work, waited for, then whatever else waits, up to WRITE_BATCH entries."""
        item = self._work.get()
        entries = 0
        while True:
            yield item
            entries += len(item) if isinstance(item, list) else 0
            if item is None or entries >= WRITE_BATCH:
                return
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return

    def _opened(self) -> QueryLog:
        if self._query_log is None:
            self._query_log = QueryLog.open(self.index_path, self.retention_days)
        return self._query_log

    def _write(self, batch: list[LoggedQuery]) -> None:
        """Store BATCH; a failure is the server log's to tell (its searches were answered already)."""
        if not batch:
            return
        with self._lock:
            self._waiting -= len(batch)
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("question log of %s: %d entries dropped, the log writer being behind", self.index_path, dropped)
        try:
            self._opened().record(batch)
        except Exception as error:  # a full disk or a read-only file must not stop the thread
            log.error("question log of %s: %d entries not stored: %s", self.index_path, len(batch), error)

    def _store_feedback(self, stored: Future[None], feedback: Feedback) -> None:
        try:
            self._opened().feedback(feedback.query, feedback.id, feedback.helpful, feedback.time)
        except Exception as error:  # handed to the request waiting for it
            stored.set_exception(error)
        else:
            stored.set_result(None)


def _logged_query(row: tuple) -> LoggedQuery:
    when, query, mode, filters, hits, best_score, below_threshold = row
    return LoggedQuery(
        when,
        query,
        mode,
        None if filters is None else json.loads(filters),
        [(hit["id"], hit["score"]) for hit in json.loads(hits)],
        best_score,
        bool(below_threshold),
    )


def _text(text: str) -> str:
    """TEXT as SQLite can store it (UTF-8): a lone surrogate, half a UTF-16 pair, becomes U+FFFD rather than
    failing the whole batch it came in."""
    return LONE_SURROGATE.sub("\ufffd", text)


def _check_days(days: float) -> None:
    if isinstance(days, bool) or not isinstance(days, int | float) or not days > 0:
        raise ConfigError(f"the question log keeps rows for a positive number of days, got {days!r}")


def _now() -> float:
    """Unix seconds; a function because `QueryLog.feedback`'s TIME argument hides the module."""
    return time.time()


@contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """SQLite's OperationalError (a full disk, a read-only file, a lock held too long) as an IndexWriteError."""
    try:
        yield
    except sqlite3.OperationalError as error:
        raise IndexWriteError(f"cannot write {path}: {error}") from None
