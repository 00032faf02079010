"""Writing documents: which records to embed, store or leave alone, and storing them with their vectors.

Records arrive in chunks; each chunk is planned against what is stored (new, changed, fields-only,
unchanged), and each batch of embedded documents is committed to SQLite in one transaction together with
its vectors, so an interrupted run leaves only complete documents. The FAISS structure is changed after
each commit and saved once at the end (see `vectorfile`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol, TypeVar

import numpy as np

from .errors import InvalidRecordError
from .sources import Record
from .store import DocumentStore, StoredRow, content_hash, document_owners, fields_json
from .vectorfile import VectorFile

T = TypeVar("T")
# Alternative wordings of one document, at most: each is a vector, and a document is embedded and stored whole.
MAX_PHRASINGS = 1000


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
    passages: int = 0  # vectors of the embedded documents' texts: one each, or one per passage of a long one
    split: int = 0  # embedded documents whose text was split into several passages

    @property
    def documents(self) -> int:
        """Documents in the input, after empty texts and repeated ids."""
        return self.added + self.updated + self.unchanged


@dataclass(frozen=True)
class Embedded:
    """Records with their vectors: for each record in turn, one per passage of its text, then one per phrasing."""

    records: list[Record]
    vectors: np.ndarray
    spans: list[list[tuple[int, int]]]  # for each record, its passages' [start, end) in its text
    truncated: int = 0  # texts cut to the model's limit
    model_seconds: float = 0.0


# Embeds the records to store (those new or changed), in batches (see `Batches`, below).
Embed = Callable[[list[Record]], "Batches"]


@dataclass
class AddPlan:
    """What to do with each record of a chunk, given what is stored."""

    new: list[Record] = field(default_factory=list)
    changed: list[Record] = field(default_factory=list)
    fields_only: list[Record] = field(default_factory=list)
    unchanged: list[Record] = field(default_factory=list)

    @property
    def pending(self) -> list[Record]:
        """The records to embed."""
        return self.new + self.changed

    def counts(self, received: int, empty: int, earlier: Collection[str] = ()) -> dict[str, int]:
        """`AddReport`'s document counts for this plan, made from RECEIVED records of which EMPTY had no text;
        a record whose id an EARLIER chunk had counts as a repeated id."""

        def fresh(records: list[Record]) -> int:
            return sum(record.id not in earlier for record in records)

        added, updated, unchanged = (
            fresh(self.new),
            fresh(self.changed) + fresh(self.fields_only),
            fresh(self.unchanged),
        )
        return {
            "added": added,
            "updated": updated,
            "unchanged": unchanged,
            "skipped_empty": empty,
            "duplicates": received - empty - added - updated - unchanged,
        }


def chunked(items: Iterable[T], size: int) -> Generator[list[T], None, None]:
    """ITEMS in lists of SIZE (the last may be shorter)."""
    stream = iter(items)
    while chunk := list(islice(stream, size)):
        yield chunk


def check_record(record: Record) -> None:
    """Refuse, naming it, a record that cannot be stored as it is."""
    if len(record.phrasings) > MAX_PHRASINGS:
        raise InvalidRecordError(
            f"document {record.id!r} has {len(record.phrasings):,} alternative wordings; at most "
            f"{MAX_PHRASINGS:,} are stored"
        )
    try:
        fields = json.dumps(record.fields, ensure_ascii=False, allow_nan=False)  # NaN and infinity are no JSON
        for text in (record.id, record.text, *record.phrasings, fields):
            text.encode("utf-8")  # what SQLite stores; a lone surrogate, which JSON's \u escapes allow, has none
    except (TypeError, ValueError) as error:  # UnicodeEncodeError is a ValueError
        raise InvalidRecordError(
            f"document {record.id!r} cannot be stored: its fields must be JSON and its texts Unicode ({error})"
        ) from None


def latest_documents(records: Iterable[Record]) -> tuple[list[Record], int, int]:
    """The records to store, the last of repeated ids winning, with how many came in and how many had no text."""
    latest: dict[str, Record] = {}
    received = 0
    for record in records:
        received += 1
        latest[record.id] = record
    documents = [record for record in latest.values() if record.text.strip()]
    return documents, received, len(latest) - len(documents)


def plan(store: DocumentStore, documents: list[Record], headed_passages: bool) -> AddPlan:
    """Sort records into new, changed (to embed again), fields-only updates and unchanged ones.

    HEADED_PASSAGES: whether the index puts a text's heading before each of its passages, so that a new
    heading means new vectors; else it is stored as a fields-only change.
    """
    stored = store.stored([record.id for record in documents])
    result = AddPlan()
    for record in documents:
        before = stored.get(record.id)
        if before is None:
            result.new.append(record)
        elif (
            before.content != content_hash(record.text, record.phrasings)
            or not before.passages
            or before.phrasings != len(record.phrasings)
            or (headed_passages and before.heading != len(record.heading))
        ):
            result.changed.append(record)  # vectors missing: an interrupted earlier run, or a repair that lost some
        elif before.fields != fields_json(record.fields) or before.heading != len(record.heading):
            result.fields_only.append(record)
        else:
            result.unchanged.append(record)
    return result


class Batches(Protocol):
    """What an `Embed` returns: embedded batches, and a way to stop making them."""

    def __iter__(self) -> Iterator[Embedded]: ...

    def __next__(self) -> Embedded: ...

    def close(self) -> None: ...


@dataclass
class _Chunk:
    """A chunk of records as planned, its records to embed handed to its embed step."""

    plan: AddPlan
    received: int
    ids: set[str]
    batches: Batches


@dataclass
class _Tally:
    """What a write has done so far, for its `AddReport`."""

    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("added", "updated", "unchanged", "skipped_empty", "duplicates"), 0)
    )
    truncated: int = 0
    model_seconds: float = 0.0
    passages: int = 0
    split: int = 0
    changed: bool = False
    compacted: bool = False  # along the way, its new vectors having passed the write buffer

    def add(self, batch: Embedded) -> None:
        self.changed = self.changed or bool(batch.records)
        self.truncated += batch.truncated
        self.model_seconds += batch.model_seconds
        self.passages += sum(map(len, batch.spans))
        self.split += sum(len(spans) > 1 for spans in batch.spans)


class Writer:
    """Stores chunks of records and their vectors into one index's store and vector structure."""

    def __init__(self, store: DocumentStore, vectors: VectorFile, headed_passages: bool, most_pending: int) -> None:
        self._store = store
        self._vectors = vectors
        self._headed_passages = headed_passages  # see `plan`
        self._most_pending = most_pending  # new vectors held in memory before a compaction (`keep_bounded`)

    def write(
        self,
        chunks: Iterable[tuple[list[Record], Embed]],
        max_length: int,
        progress: Callable[[int], None] | None = None,
    ) -> AddReport:
        """Plan and store each chunk of records, embedding what needs it with the chunk's EMBED.

        Within a chunk the last of repeated ids wins; a later chunk replaces an earlier one's document
        (counted as a repeated id). PROGRESS is told how many records were dealt with, as they are.

        The next chunk is planned, and its EMBED called, before this one's batches are stored, so that an
        EMBED working ahead (see `stages`) has the next chunk's texts to tokenize while this one's are in the
        model; unless the two share an id, as planning it would then read what this one has yet to store.
        Everything is stored in the input's order, and an error in the next chunk is raised once this one
        is stored, as if each were done in turn.
        """
        started = time.perf_counter()
        tally = _Tally()
        seen: set[str] = set()
        stream = iter(chunks)
        current: _Chunk | None = None
        upcoming: _Chunk | None = None
        try:
            while True:
                try:
                    following = next(stream, None)
                    if following is not None and current is not None and _shares_ids(current, following[0]):
                        self._store_chunk(current, tally, progress)
                        current = None
                    upcoming = None if following is None else self._planned(*following, seen, tally)
                except Exception:
                    if current is not None:
                        self._store_chunk(current, tally, progress)  # stored, as it would have been before
                    raise
                if current is not None:
                    self._store_chunk(current, tally, progress)
                current, upcoming = upcoming, None
                if current is None:
                    break
        finally:
            for chunk in (current, upcoming):
                if chunk is not None:
                    chunk.batches.close()
        if tally.changed:
            self._vectors.settle(long_write=tally.compacted)
        return AddReport(
            **tally.counts,
            truncated=tally.truncated,
            max_length=max_length,
            seconds=time.perf_counter() - started,
            model_seconds=tally.model_seconds,
            passages=tally.passages,
            split=tally.split,
        )

    def _planned(self, records: list[Record], embed: Embed, seen: set[str], tally: _Tally) -> _Chunk:
        """RECORDS checked and planned against what is stored, counted, and what needs it handed to EMBED."""
        for record in records:
            check_record(record)
        documents, received, empty = latest_documents(records)
        chunk_plan = plan(self._store, documents, self._headed_passages)
        for key, count in chunk_plan.counts(received, empty, seen).items():
            tally.counts[key] += count
        seen.update(record.id for record in documents)
        ids = {record.id for record in documents}
        return _Chunk(chunk_plan, received, ids, embed(chunk_plan.pending))

    def _store_chunk(self, chunk: _Chunk, tally: _Tally, progress: Callable[[int], None] | None) -> None:
        """A planned chunk's fields-only updates, then its embedded documents batch by batch, each batch with
        its vectors in one transaction."""
        chunk_plan = chunk.plan
        if chunk_plan.fields_only:
            with self._store.transaction():
                self._store.upsert_documents([_row(record) for record in chunk_plan.fields_only])
            tally.changed = True
        reembed = {record.id for record in chunk_plan.changed}
        with closing(chunk.batches) as batches:
            for batch in batches:
                with self._store.transaction():
                    dropped, added_ids = self._store_embedded(batch, reembed)
                self._vectors.apply(dropped, added_ids, batch.vectors)
                tally.compacted |= self._vectors.keep_bounded(self._most_pending)
                tally.add(batch)
                if progress:
                    progress(len(batch.records))
        settled = chunk.received - len(chunk_plan.pending)  # unchanged, fields only, empty or repeated
        if progress and settled:
            progress(settled)

    def _store_embedded(self, batch: Embedded, reembed: Collection[str]) -> tuple[list[int], list[int]]:
        """Upsert BATCH's records with their vectors inside the caller's transaction; returns the ids of the
        vectors dropped and of those added, for `VectorFile.apply` once the transaction is committed."""
        rowids, dropped = self._store.upsert_documents([_row(record) for record in batch.records], reembed)
        owners = [
            owner
            for record, rowid, spans in zip(batch.records, rowids, batch.spans, strict=True)
            for owner in document_owners(rowid, spans, record.phrasings)
        ]
        return dropped, self._store.add_vectors(owners, batch.vectors)


def _shares_ids(chunk: _Chunk, records: list[Record]) -> bool:
    """Whether any of RECORDS has the id of a document of CHUNK."""
    return any(record.id in chunk.ids for record in records)


def _row(record: Record) -> StoredRow:
    """A record as the store writes it: id, text, fields, the hash of what gets embedded, its heading's length."""
    return StoredRow(
        record.id, record.text, record.fields, content_hash(record.text, record.phrasings), len(record.heading)
    )
