"""`Index`: a named directory of documents and vectors that answers questions by meaning.

The facade users call. It owns the lifecycle (create, open, close, the writer lock) and the model, and
hands the work to small parts: the SQLite store (`store`), the FAISS file's life (`vectorfile`), write
planning (`writes`) and ranking (`search`). Queries are embedded exactly the way documents were, as the
manifest's embedding spec says.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import BATCH_SIZE, BATCH_TOKENS, WRITE_BUFFER_MB, Settings
from .errors import (
    ConfigError,
    DocumentNotFoundError,
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexWriteError,
    ModelMismatchError,
)
from .inbox import CONFUSABLE_SIMILARITY, MAX_QUESTIONS, Audit, Group, confusable_pairs, inbox
from .manifest import VALID_VALUES, Manifest, new_manifest
from .paths import (
    DOCS_FILE,
    VECTORS_FILE,
    existing_index_path,
    holds_no_index,
    index_path,
    is_index,
    writer_lock,
)
from .querylog import QueryLog, logged_queries
from .search import KEYWORD_WEIGHT, Hit, Ranker, SearchOptions, check_query
from .sources import Record
from .stages import Ahead
from .store import FORMAT, DocumentStore, StoredDocument, VectorOwner, document_owners
from .vectorfile import LiveVectors, VectorFile, pending_limit
from .vectors import VectorIndex, check_search_params, resolve_type
from .writes import AddReport, Batches, Embedded, Writer, chunked

if TYPE_CHECKING:
    from .embedder import EmbeddedDocuments, Embedder

log = logging.getLogger("searcher")
MAX_FIELD_VALUES = 50  # past this many distinct values a field is no choice for a filter
WRITE_CHUNK = 4096  # records planned and embedded together: memory stays bounded whatever the input's size
# Batches of vectors `add` makes ahead of storing them: enough that the model does not wait while a few are
# stored, few enough to hold little memory.
EMBED_AHEAD = 4


class Index:
    """Documents and their vectors under one directory; create with `Index.create`, reopen with `Index.open`.

    Opening reads only: a missing or stale vector file is rebuilt in memory, and only writers (`add`,
    `delete`, `reindex`, `check(repair=True)`) change files.
    """

    def __init__(
        self, path: Path, store: DocumentStore, device: str = "auto", lock_timeout: float | None = None
    ) -> None:
        self.path = path
        self._store = store
        self._device = device
        self.lock_timeout = lock_timeout  # seconds a writer waits for another one; None: as long as it takes
        self._embedder: Embedder | None = None
        self._writer_depth = 0  # how many `writing` blocks of this object hold the writer lock
        self._query_log: QueryLog | None = None
        self._vectors = VectorFile(path / VECTORS_FILE, store, self.name)

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
        """A new, empty index embedding with SETTINGS (or an already loaded EMBEDDER).

        Made under the writer lock: of two processes creating the same index at once, the second finds it
        made and is refused with IndexExistsError (`open_or_create` then opens it).
        """
        settings = settings or Settings()
        path = index_path(name_or_path, home or settings.home)
        _require_free(path)  # before loading a model for nothing
        embedder = embedder or embedding_module().Embedder(settings.embedding, settings.runtime.device)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise IndexWriteError(f"cannot create index directory {path}: {error.strerror}") from None
        with writer_lock(path):
            _require_free(path)
            VectorIndex.empty(embedder.dimension).save(path / VECTORS_FILE)
            manifest = new_manifest(embedder.spec, embedder.dimension, settings.index_type, FORMAT)
            store = DocumentStore.create(path / DOCS_FILE, manifest)
        index = cls(path, store, settings.runtime.device)
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
        """An existing index, read-only until a write is asked for.

        EMBEDDER, already loaded (by another `Index` over the same files, say), is used if its spec is the
        index's, instead of loading the model again.
        """
        path = existing_index_path(name_or_path, home)
        index = cls(path, DocumentStore.open(path / DOCS_FILE), device, lock_timeout)
        if embedder is not None:
            index._embedder = index._checked(embedder)
        return index

    @classmethod
    def open_or_create(
        cls, name_or_path: str | Path, settings: Settings | None = None, home: str | Path | None = None
    ) -> Index:
        """The existing index, checked against the embedding SETTINGS given, or a new one built with them."""
        return cls._open_or_create(name_or_path, settings or Settings(), home)[0]

    @classmethod
    def _open_or_create(
        cls, name_or_path: str | Path, settings: Settings, home: str | Path | None = None
    ) -> tuple[Index, bool]:
        """`open_or_create`, and whether it created the index."""
        path = index_path(name_or_path, home or settings.home)
        if not is_index(path):
            try:
                return cls.create(path, settings), True
            except IndexExistsError:
                if not is_index(path):
                    raise
                # Another process created it meanwhile: it is opened like one that was there.
        index = cls.open(path, device=settings.runtime.device)
        index.require_settings(settings)
        return index, False

    @classmethod
    @contextmanager
    def for_adding(
        cls, name_or_path: str | Path, settings: Settings, lock_timeout: float | None = None
    ) -> Iterator[Index]:
        """`open_or_create`, held open for a block of writes; a new index that the block leaves empty because
        it failed (a malformed source, say) is removed again, so a failed first run leaves nothing behind."""
        index, created = cls._open_or_create(name_or_path, settings)
        with index:
            index.lock_timeout = lock_timeout
            try:
                yield index
            except Exception:
                if created:
                    index._remove_if_empty()
                raise

    def _remove_if_empty(self) -> None:
        """Remove the index if nothing is stored in it, unless another process is writing to it meanwhile."""
        with suppress(IndexLockedError), writer_lock(self.path, timeout=0):
            if not len(self):
                self.close()
                shutil.rmtree(self.path)

    @property
    def manifest(self) -> Manifest:
        return Manifest.from_dict(self._store.manifest(), self.name)

    def __len__(self) -> int:
        return self._store.count()

    @property
    def vector_count(self) -> int:
        """How many vectors the index holds: one per passage of a document's text and one per alternative phrasing."""
        return self._store.vector_count()

    def documents(self) -> Iterator[StoredDocument]:
        """Every stored document (id, text, fields), in the order they were first stored."""
        return self._store.all_documents()

    def document(self, document_id: str) -> dict[str, Any]:
        """The stored document DOCUMENT_ID as the HTTP API's upserts take it: id, title (its heading), text (the
        rest), fields and alternative phrasings. DocumentNotFoundError if the index does not hold it."""
        found = self._store.stored_document(document_id)
        if found is None:
            raise DocumentNotFoundError(f"index {self.name!r} holds no document {document_id!r}")
        stored, heading, phrasings = found
        title, text = stored.text[:heading], stored.text[heading:].strip()
        return {"id": stored.id, "title": title, "text": text, "fields": stored.fields, "phrasings": phrasings}

    def field_values(self, limit: int = MAX_FIELD_VALUES) -> dict[str, list[Any]]:
        """Each stored field's distinct values (scalars), for fields with at most LIMIT of them."""
        return self._store.field_values(limit)

    def stored_vectors(self) -> Iterator[tuple[str, VectorOwner, np.ndarray]]:
        """Every stored vector as (document id, what it embeds: a passage's span or a phrasing, vector)."""
        return self._store.owned_vectors(self.manifest.dimension)

    @property
    def vectors(self) -> LiveVectors:
        """The vector structure searches use now (read it, don't change it)."""
        return self._vectors.vectors

    @property
    def embedder(self) -> Embedder:
        """The manifest's model, loaded on first use: only from this machine (opening an index downloads
        nothing), and only once its files are found to be those the index was built with.

        The manifest names the model, so whoever can write an index chooses what is loaded; its fingerprint
        is therefore checked before any of its weights are read.
        """
        if self._embedder is None:
            spec = self.manifest.spec
            embedding = embedding_module()
            model_dir = embedding.locate_model(spec.model, download=False)
            fingerprint = embedding.model_fingerprint(model_dir)
            if fingerprint != spec.fingerprint:
                raise self._other_copy(fingerprint, model_dir)
            self._embedder = self._checked(embedding.Embedder(spec.settings(), self._device, model_dir))
        return self._embedder

    def _checked(self, embedder: Embedder) -> Embedder:
        """EMBEDDER, if its spec is the index's: the same settings and the very model files."""
        wanted, given = self.manifest.spec, embedder.spec
        if wanted == given:
            return embedder
        differing = [name for name in wanted.differences(given) if name != "fingerprint"]
        if differing:
            raise ModelMismatchError(
                f"index {self.name!r} embeds with other settings ({', '.join(differing)}) than this model"
            )
        raise self._other_copy(given.fingerprint, embedder.model_dir)

    def _other_copy(self, fingerprint: str, model_dir: Path) -> ModelMismatchError:
        wanted = self.manifest.spec
        return ModelMismatchError(
            f"index {self.name!r} was built with a different copy of {wanted.model} "
            f"(fingerprint {wanted.fingerprint[:12]}, now {fingerprint[:12]} at {model_dir}); "
            "restore that model or rebuild the index"
        )

    def require_settings(self, settings: Settings) -> None:
        """Refuse settings, other than "auto" or unset, that differ from how this index was built."""
        manifest = self.manifest
        spec = manifest.spec
        for name, value in vars(settings.embedding).items():
            if value not in (None, "auto") and getattr(spec, name) != value:
                raise ConfigError(
                    f"index {self.name!r} was built with {name} {getattr(spec, name)!r}, not {value!r}; "
                    "use a new index for other settings"
                )
        stored_type = manifest.index_type
        if settings.index_type not in ("auto", stored_type):
            raise ConfigError(
                f"index {self.name!r} has index type {stored_type!r}; change it with "
                f"`searcher reindex {self.name} --index-type {settings.index_type}`"
            )

    def add(
        self,
        records: Iterable[Record],
        batch_size: int = BATCH_SIZE,
        batch_tokens: int = BATCH_TOKENS,
        progress: Callable[[int], None] | None = None,
        overlap: bool = True,
        write_buffer_mb: int = WRITE_BUFFER_MB,
    ) -> AddReport:
        """Embed and store RECORDS (any iterable, read WRITE_CHUNK at a time); an id already in the index is
        replaced, and the last of repeated ids wins.

        Documents go through the model in batches of at most BATCH_SIZE documents and BATCH_TOKENS padded
        tokens. Each batch is committed to SQLite on its own; FAISS is saved at the end, and along the way
        whenever the new vectors held in memory pass WRITE_BUFFER_MB (if a crash comes first, it is brought up
        to date from SQLite on open).

        OVERLAP: read records, tokenize them and drive the model on threads of their own while this one
        stores, the next chunk's texts tokenized while this one's are in the model (see `stages` and
        `Writer.write`); False does each step in turn on this thread. Both store the same rows and vectors,
        and an error raised in any step is raised here, its type unchanged, once every thread has stopped.
        """
        embedder = self.embedder  # loaded (and its spec checked) before anything is written

        def embed(pending: list[Record]) -> Batches:
            def embedded() -> Generator[Embedded, None, None]:
                documents = ((record.text, record.heading, record.phrasings) for record in pending)
                with closing(embedder.embed_documents(documents, batch_size, batch_tokens, overlap)) as batches:
                    for batch in batches:
                        yield _embedded([pending[i] for i in batch.positions], batch)

            return Ahead(embedded(), EMBED_AHEAD, "searcher-embed") if overlap else embedded()

        chunks = chunked(records, WRITE_CHUNK)
        with self.writing(), closing(Ahead(chunks, 1, "searcher-read") if overlap else chunks) as read:
            writer = self._writer(write_buffer_mb)
            return writer.write(((chunk, embed) for chunk in read), embedder.max_length, progress)

    def add_embedded(
        self,
        shards: Iterable[tuple[list[Record], EmbeddedDocuments]],
        progress: Callable[[int], None] | None = None,
        write_buffer_mb: int = WRITE_BUFFER_MB,
    ) -> AddReport:
        """Store documents embedded elsewhere (`searcher.distributed`), shard by shard.

        Each shard holds records and, in EMBEDDED, the vectors of every one of them (passages, then phrasings), as
        `Embedder.embed_documents` made them with this index's model. Documents are planned as in `add`:
        the last of repeated ids wins and unchanged documents are left alone.
        """
        manifest = self.manifest
        with self.writing():
            return self._writer(write_buffer_mb).write(
                (_shard_chunk(records, embedded, manifest.dimension) for records, embedded in shards),
                manifest.spec.max_length,
                progress,
            )

    def _writer(self, buffer_mb: int) -> Writer:
        manifest = self.manifest
        return Writer(self._store, self._vectors, manifest.spec.chunk > 0, pending_limit(buffer_mb, manifest.dimension))

    def stored_keys(self) -> np.ndarray:
        """Sorted `document_key`s of the stored documents: a record whose key is here is stored unchanged."""
        return self._store.document_keys()

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Remove documents by external id; returns the ids that were found (unknown ids are ignored)."""
        with self.writing():
            with self._store.transaction():
                deleted, dropped = self._store.delete_documents(list(dict.fromkeys(ids)))
            self._vectors.apply(dropped)
            if deleted:
                self._vectors.settle()
        return deleted

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the index's writer lock: one writer at a time, readers never wait.

        Re-entrant, so that a caller can hold it across several writes (a Ray run across all its shards).
        """
        with self._writer_lock() as outermost:
            if outermost:
                self._store.upgrade()
                self._vectors.prepare_write()  # another process may have written since this one loaded its vectors
            yield

    @contextmanager
    def _writer_lock(self) -> Iterator[bool]:
        """The writer lock, taken once however deeply held; yields whether this is the outermost hold."""
        if self._writer_depth:
            self._writer_depth += 1
            try:
                yield False
            finally:
                self._writer_depth -= 1
            return
        with writer_lock(self.path, self.lock_timeout):
            self._writer_depth = 1
            try:
                yield True
            finally:
                self._writer_depth = 0

    def reindex(self, index_type: str, search_params: dict[str, int] | None = None) -> LiveVectors:
        """Rebuild the vector structure as INDEX_TYPE from the stored vectors (nothing is embedded again)."""
        resolve_type(index_type, 0)  # refuse an unknown type before touching anything
        params = check_search_params(search_params or {})
        with self.writing():
            self._store.update_manifest({"index_type": index_type, "search_params": params})
            self._vectors.replace(self._vectors.rebuild())
            self._vectors.save()
        return self._vectors.vectors

    def search(
        self,
        text: str,
        k: int = 10,
        mode: str = "dense",
        min_score: float | None = None,
        keyword_weight: float = KEYWORD_WEIGHT,
        filters: dict[str, Any] | None = None,
        log: bool | None = None,
    ) -> list[Hit]:
        """The K best documents for TEXT, best first: `search_many` of one query."""
        return self.search_many([text], k, mode, min_score, keyword_weight, filters, log=log)[0]

    def search_many(
        self,
        texts: Sequence[str],
        k: int = 10,
        mode: str = "dense",
        min_score: float | None = None,
        keyword_weight: float = KEYWORD_WEIGHT,
        filters: dict[str, Any] | None = None,
        vectors: np.ndarray | None = None,
        log: bool | None = None,
    ) -> list[list[Hit]]:
        """The K best documents for each of TEXTS, best first, at least MIN_SCORE, among those whose fields
        pass FILTERS; all queries go through the model in one forward pass.

        dense: cosine similarity of the best-matching phrasing; keyword: BM25; hybrid: cosine plus
        KEYWORD_WEIGHT times BM25 relative to the query's best keyword match. Hits scoring under the
        index's calibrated threshold for the mode are marked `below_threshold`. FILTERS: {field: value} or
        {field: {"in": [values]}} (see `store.filter_sql`). VECTORS, one row per text from `embed_queries`,
        are used instead of the model: the server embeds many requests' queries together elsewhere.

        LOG: write the questions and their hits to the question log (`query_log`); None: if the index's
        `log_queries` setting is on.
        """
        for text in texts:
            check_query(text)
        options = SearchOptions(k, mode, min_score, keyword_weight, filters)
        manifest = self.manifest  # read once per call: a search reads it for the vector file and the threshold
        self._vectors.refresh(manifest)
        ranker = Ranker(self._store, self._vectors.vectors)
        if vectors is None and options.needs_vector and len(self._vectors.vectors) > 0 and texts:
            vectors = self.embed_queries(texts)
        rows = [None] * len(texts) if vectors is None else vectors
        threshold = manifest.threshold(mode)
        found = [
            ranker.hits(text, ranker.rank(text, vector, options), threshold, mode)
            for text, vector in zip(texts, rows, strict=True)
        ]
        if texts and (log or (log is None and manifest.log_queries)):
            self.query_log().record(logged_queries(texts, found, mode, filters))
        return found

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """TEXTS as query vectors, one row each, in one forward pass: what `search_many` takes as VECTORS.

        Once the model is loaded (or was given to `open`) this touches no file, so any thread may call it.
        """
        return self.embedder.embed(list(texts))

    def set_threshold(self, mode: str, threshold: float, calibration: dict[str, Any]) -> None:
        """Store the score under which MODE's hits are marked as no good match, and how it was chosen."""
        with self._writer_lock():  # read, merged and written as one: another mode's calibration is not lost
            manifest = self.manifest
            self._store.update_manifest(
                {
                    "thresholds": manifest.thresholds | {mode: threshold},
                    "calibration": manifest.calibration | {mode: calibration},
                }
            )

    def set_logging(self, enabled: bool, days: int | None = None) -> None:
        """Turn the question log on or off for searches that do not say (see `search_many`'s LOG), and keep
        its rows DAYS days (unchanged if None)."""
        settings: dict[str, Any] = {"log_queries": enabled}
        if days is not None:
            valid, what = VALID_VALUES["log_days"]
            if not valid(days):
                raise ConfigError(f"the question log's days {days!r} {what}")
            settings["log_days"] = days
        with self._writer_lock():
            self._store.update_manifest(settings)
        if days is not None and self._query_log is not None:
            self._query_log.retention_days = days

    def query_log(self) -> QueryLog:
        """The index's question log (queries.sqlite beside docs.sqlite, created if missing), kept for the
        index's `log_days`."""
        if self._query_log is None:
            self._query_log = QueryLog.open(self.path, self.manifest.log_days)
        return self._query_log

    def inbox(self, since: float | None = None, min_score: float | None = None) -> list[Group]:
        """The logged questions (asked at or after SINCE, unix seconds; the newest MAX_QUESTIONS) that the
        index does not cover, grouped by meaning, biggest group first (see `inbox`).

        A question's coverage is judged on the index as it is now: a gap filled since it was asked no longer
        shows. MIN_SCORE replaces the "not covered" cut that `calibrate` stores.
        """
        cut = self.manifest.not_covered if min_score is None else min_score
        if cut is None:
            raise ConfigError(
                f'index {self.name!r} has no "not covered" cut: run `searcher calibrate` on judged questions '
                "(dense), or give a minimum score"
            )
        questions = [entry.query for entry in reversed(self.query_log().latest(MAX_QUESTIONS, since))]
        if not questions:
            return []
        vectors = self.embed_queries(questions)
        best = np.array([entry[1] if entry else -np.inf for entry in self._best_entries(vectors)])
        return inbox(questions, vectors, best, cut, self._best_entries)

    def audit(self, min_similarity: float = CONFUSABLE_SIMILARITY) -> Audit:
        """Entries the model can barely tell apart (their first vectors at least MIN_SIMILARITY alike), entries
        that no logged question found first, and entries whose own heading does not find them first (an entry
        found first by another with the same heading counts as found: they are listed as confusable)."""
        firsts: dict[str, np.ndarray] = {}
        for document, owner, vector in self.stored_vectors():
            if owner.phrasing is None:
                firsts.setdefault(document, vector)
        ids = list(firsts)
        confusable = confusable_pairs(ids, np.array(list(firsts.values())).reshape(len(ids), -1), min_similarity)
        matched = self.query_log().first_hits()
        headings = dict(self._store.headings())
        # An entry's heading asked as a question, in one batch; the answer must be the entry or share its heading.
        asked = list(headings)
        found = self.search_many([headings[document] for document in asked], 1, log=False) if asked else []
        missed = [
            document
            for document, hits in zip(asked, found, strict=True)
            if not hits or (hits[0].id != document and headings.get(hits[0].id) != headings[document])
        ]
        return Audit(confusable, [document for document in ids if document not in matched], missed)

    def _best_entries(self, vectors: np.ndarray) -> list[tuple[str, float] | None]:
        """The best entry (id, score) for each of some query VECTORS; None where the index finds none."""
        found = self.search_many(["(a vector)"] * len(vectors), 1, vectors=vectors, log=False)
        return [(hits[0].id, hits[0].score) if hits else None for hits in found]

    def check(self, repair: bool = False) -> list[str]:
        """What is wrong with the index (empty: nothing); with REPAIR, first rebuild what can be rebuilt.

        Without REPAIR nothing is changed. Repair copies what can still be read out of a damaged database
        file into a new one, rebuilds the keyword index and the vector file from SQLite, embeds again the
        vectors that are damaged or missing, and warns of what it could not keep.
        """
        try:
            dimension = self.manifest.dimension
        except IndexCorruptError as error:
            return [str(error)]  # what every other part is read and rebuilt with: nothing more can be done
        if repair:
            with self._writer_lock():  # not `writing`: the vectors are rebuilt, not read from damaged pages
                self._repair(dimension)
        damage = self._store.damage()
        if damage:
            return damage  # every other check would read the same damaged pages
        return self._store.problems(dimension) + self._vectors.problems()

    def _repair(self, dimension: int) -> None:
        """Rebuild every derived part from what docs.sqlite still holds; warn of what is lost."""
        if self._store.damage():
            salvage = self._store.salvage()
            if salvage.kept < salvage.counted:
                log.warning(
                    "%s of %s documents could not be read and are lost; index their source again to restore them",
                    f"{salvage.counted - salvage.kept:,}",
                    f"{salvage.counted:,}",
                )
        self._store.upgrade()  # vectors embedded again have spans
        rewritten, emptied = self._store.repair()
        if rewritten:
            log.warning(
                "%d documents had numbers JSON cannot hold (NaN, infinity) in their fields, now null, e.g. %r",
                len(rewritten),
                rewritten[0],
            )
        if emptied:
            log.warning("the fields of %d documents could not be read and are lost, e.g. %r", len(emptied), emptied[0])
        damaged = self._store.damaged_vectors(dimension)
        bare = self._store.documents_without_vectors()
        if damaged or bare:
            self._embed_again(list(dict.fromkeys([rowid for _, rowid, _ in damaged] + [doc.rowid for doc in bare])))
        if damaged:
            log.warning(
                "%d damaged vectors were embedded again with their documents, e.g. of %r", len(damaged), damaged[0][2]
            )
        if bare:
            log.warning(
                "%d documents had no vector and were embedded again from their text, e.g. %r; the alternative "
                "wordings any of them had are lost until their source is indexed again",
                len(bare),
                bare[0].id,
            )
        self._vectors.replace(self._vectors.rebuild())
        self._vectors.save()

    def _embed_again(self, documents: list[int]) -> None:
        """Replace every vector of the DOCUMENTS (rowids) with new ones, made as `add` makes them."""
        inputs = self._store.embedding_inputs(documents)
        texts = ((document.text, document.text[:heading], phrasings) for document, heading, phrasings in inputs)
        for batch in self.embedder.embed_documents(texts):
            owners = []
            for position, spans in zip(batch.positions, batch.spans or [], strict=True):
                document, _, phrasings = inputs[position]
                owners += document_owners(document.rowid, spans, phrasings)
            with self._store.transaction():
                self._store.drop_vectors([inputs[position][0].rowid for position in batch.positions])
                self._store.add_vectors(owners, batch.vectors)

    def info(self) -> dict[str, Any]:
        """Name, path, document count, size on disk and manifest, read from SQLite (no vectors are loaded)."""
        return index_info(self.path, self._store)

    def close(self) -> None:
        if self._query_log is not None:
            self._query_log.close()
            self._query_log = None
        self._store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def describe_index(name_or_path: str | Path, home: str | Path | None = None) -> dict[str, Any]:
    """`Index.info` without opening the index's vectors: for listing many indexes cheaply."""
    path = existing_index_path(name_or_path, home)
    store = DocumentStore.open(path / DOCS_FILE)
    try:
        return index_info(path, store)
    finally:
        store.close()


def index_info(path: Path, store: DocumentStore) -> dict[str, Any]:
    return {
        "name": path.name,
        "path": str(path),
        "documents": store.count(),
        "size_bytes": sum(p.stat().st_size for p in path.iterdir() if p.is_file()),
        "manifest": Manifest.from_dict(store.manifest(), path.name).as_dict(),
    }


def _require_free(path: Path) -> None:
    """Refuse to create an index at PATH where there is one, or where a directory holds files of its own."""
    if is_index(path):
        raise IndexExistsError(f"an index already exists at {path}")
    if path.exists() and (not path.is_dir() or not holds_no_index(path)):
        raise IndexExistsError(f"{path} exists and is not an empty directory")


def _shard_chunk(
    records: list[Record], embedded: EmbeddedDocuments, dimension: int
) -> tuple[list[Record], Callable[[list[Record]], Generator[Embedded, None, None]]]:
    """A shard embedded elsewhere as a chunk for `Writer.write`: its embed step only looks vectors up."""
    spans = embedded.spans if embedded.spans is not None else [[(0, len(record.text))] for record in records]
    starts = np.cumsum(
        [0] + [len(passages) + len(record.phrasings) for record, passages in zip(records, spans, strict=True)]
    )
    expected = (starts[-1], dimension)
    if embedded.vectors.shape != expected:
        raise IndexCorruptError(
            f"a shard of {len(records)} documents came with vectors of shape "
            f"{embedded.vectors.shape}; this index needs {expected}"
        )
    rows = {record.id: i for i, record in enumerate(records)}

    def vectors_of(pending: list[Record]) -> Generator[Embedded, None, None]:
        positions = [rows[record.id] for record in pending]
        vectors = np.concatenate(
            [embedded.vectors[starts[i] : starts[i + 1]] for i in positions] or [embedded.vectors[:0]]
        )
        yield Embedded(pending, vectors, [spans[i] for i in positions], embedded.truncated, embedded.model_seconds)

    return records, vectors_of


def _embedded(records: list[Record], batch: EmbeddedDocuments) -> Embedded:
    """A batch the embedder made of RECORDS, as the writer stores it."""
    return Embedded(records, batch.vectors, batch.spans or [], batch.truncated, batch.model_seconds)


def embedding_module() -> Any:
    """The embedder module, imported when a model is first needed: torch takes seconds to import, and
    listing, checking, dropping or keyword-searching an index needs none of it."""
    from . import embedder

    return embedder
