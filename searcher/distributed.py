"""Indexing on a Ray cluster: Ray Data reads the source, an actor pool embeds with the local path's code.

ray and pyarrow are imported here and nowhere else (the optional extra `searcher[ray]`).

    source files ── read tasks: searcher's own parsers, stored documents dropped ──▶ shards of documents
    ── embedding actors: `Embedder.embed_documents`, one model each ──▶ staging/<shard>.parquet
    ── the driver: `Index.add_embedded`, one transaction per shard, in source order ──▶ SQLite + FAISS

The driver stays the one writer, so the manifest, upserts by id, crash safety and `searcher check` hold as
on the local path. A staged shard is deleted once stored; a run that is killed leaves the others behind, and
the next run stores those first, then embeds only the documents that are not stored yet. Ray retries the
tasks of a lost worker itself.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import Runtime, Settings, SourceFormat
from .embedder import EmbeddedDocuments, Embedder
from .errors import ConfigError, ModelMismatchError, SearcherError, SourceError
from .index import Index
from .manifest import EmbeddingSpec
from .sources import (
    DIRECTORY_SUFFIXES,
    FILE_FORMATS,
    OnError,
    Record,
    check_file_format,
    read_records,
    read_rows,
    read_stream,
)
from .store import content_hash, document_key, fields_json
from .writes import AddReport, latest_documents

try:
    import pyarrow as pa
    import pyarrow.fs
    import pyarrow.parquet as pq
    import ray
    import ray.data
except ImportError:  # the extra is optional: `add_source` says how to get it
    ray = None  # type: ignore[assignment]  # the module or None: what `add_source` tests for

SHARD_FORMATS = (*FILE_FORMATS, ".parquet")
SHARD_DOCUMENTS = 1000  # the CLI's --shard-size default
STAGING_DIR = "staging"
READ_COUNTS = ("read", "empty", "duplicates", "unchanged")


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: a cluster address (None: a local cluster for this run), actors, GPUs per actor,
    documents per shard (one actor call and one staged file each)."""

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    shard_documents: int = SHARD_DOCUMENTS

    def __post_init__(self) -> None:
        if self.actors < 1 or self.gpus_per_actor < 0 or self.shard_documents < 1:
            raise ConfigError(f"invalid Ray options {self}: actors and shard size at least 1, GPUs not negative")


@dataclass(frozen=True)
class ReadOptions:
    """How the read tasks parse the source: the local path's options."""

    source_format: SourceFormat = field(default_factory=SourceFormat)
    skip_errors: bool = False


def index_on_ray(
    source: str,
    name: str,
    settings: Settings,
    options: RayOptions,
    lock_timeout: float | None = None,
    on_error: OnError = None,
    on_embedded: Callable[[int], None] | None = None,
    on_stored: Callable[[int], None] | None = None,
) -> AddReport:
    """`searcher index --engine ray`: SOURCE into the index NAME (created if new) on a Ray cluster.

    A malformed source is refused before an index is created, and a failed first run leaves none behind.
    Malformed records stop the run, or with ON_ERROR are handed to it and skipped, as on the local path.
    """
    files = source_files(source)
    read = ReadOptions(settings.source, skip_errors=on_error is not None)
    with Index.for_adding(name, settings, lock_timeout) as index:
        report, skipped = add_source(index, source, files, read, settings.runtime, options, on_embedded, on_stored)
    if on_error is not None:
        for error in skipped:
            on_error(error)
    return report


def add_source(
    index: Index,
    source: str,
    files: list[str],
    read: ReadOptions,
    runtime: Runtime,
    options: RayOptions,
    on_embedded: Callable[[int], None] | None = None,
    on_stored: Callable[[int], None] | None = None,
) -> tuple[AddReport, list[SourceError]]:
    """Index the FILES of SOURCE (see `source_files`) into INDEX on Ray.

    Returns what was stored and, with `skip_errors`, the malformed records that were skipped.
    """
    started = time.perf_counter()
    staging = index.path / STAGING_DIR
    dimension = index.manifest.dimension
    with index.writing():  # one run stages into an index at a time
        staging.mkdir(exist_ok=True)
        for partial in staging.glob(".*.partial"):  # cut short by a crash while being written
            partial.unlink()
        leftover = index.add_embedded(
            _staged_shards(sorted(staging.glob("*.parquet")), dimension), on_stored, runtime.write_buffer_mb
        )
        with _cluster(options.address):
            gpus = ray.cluster_resources().get("GPU", 0)
            if options.gpus_per_actor > gpus:
                # Ray would wait for them for ever.
                raise ConfigError(f"--gpus-per-actor {options.gpus_per_actor:g}, but the Ray cluster has {gpus:g} GPUs")
            tally = dict.fromkeys(READ_COUNTS, 0)
            skipped: list[SourceError] = []
            shards = _embedded_shards(index, files, read, runtime, options, staging)
            report = index.add_embedded(
                _staged_shards(_arrivals(shards, tally, skipped, on_embedded), dimension),
                on_stored,
                runtime.write_buffer_mb,
            )
    if not tally["read"] and not skipped and not leftover.documents:
        raise SourceError(f"{source}: no documents found")
    # The read tasks found the documents of leftover shards stored already: they count once, as stored then.
    unchanged = tally["unchanged"] + report.unchanged - leftover.added - leftover.updated
    return replace(
        report,
        added=report.added + leftover.added,
        updated=report.updated + leftover.updated,
        unchanged=max(unchanged, 0),
        skipped_empty=tally["empty"],
        duplicates=tally["duplicates"],
        truncated=report.truncated + leftover.truncated,
        seconds=time.perf_counter() - started,
        model_seconds=report.model_seconds + leftover.model_seconds,
    ), skipped


def source_files(source: str) -> list[str]:
    """The files the read tasks take, one task each: a file, a BEIR corpus, the shard files under a directory
    (.jsonl, .csv, .tsv, .parquet, sorted), or a directory of .txt/.md documents as one unit."""
    if ray is None:
        raise ConfigError("--engine ray needs Ray: pip install 'searcher[ray]'")
    if source == "-":
        raise SourceError("--engine ray reads files, not standard input: save the input to a .jsonl file first")
    filesystem, path = _filesystem(source)
    info = filesystem.get_file_info(path)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise SourceError(f"no such file or directory: {source}")
    if info.type == pyarrow.fs.FileType.File:
        check_file_format(source, SHARD_FORMATS)
        return [source]
    corpus = f"{source.rstrip('/')}/corpus.jsonl"
    if filesystem.get_file_info(_filesystem(corpus)[1]).type == pyarrow.fs.FileType.File:
        return [corpus]
    found = filesystem.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
    names = sorted(entry.path for entry in found if entry.type == pyarrow.fs.FileType.File)
    shards = [
        name for name in names if Path(name).suffix.lower() in SHARD_FORMATS and Path(name).suffix.lower() != ".txt"
    ]
    if shards:
        scheme = source.split("://")[0] + "://" if "://" in source else ""
        return [scheme + name for name in shards]
    if any(Path(name).suffix.lower() in DIRECTORY_SUFFIXES for name in names) and "://" not in source:
        return [source]
    raise SourceError(f"{source}: no {', '.join(SHARD_FORMATS)} or .md files in this directory")


def _filesystem(source: str) -> tuple[Any, str]:
    if "://" in source:
        return pyarrow.fs.FileSystem.from_uri(source)
    return pyarrow.fs.LocalFileSystem(), str(Path(source).resolve())


def _embedded_shards(
    index: Index, files: list[str], read: ReadOptions, runtime: Runtime, options: RayOptions, staging: Path
) -> Iterator[dict[str, Any]]:
    """Rows coming back from the actors, one per shard, in source order."""
    reading = {"read": read, "stored": ray.put(index.stored_keys()), "shard_documents": options.shard_documents}
    embed = {
        "spec": index.manifest.spec,
        "device": "cuda" if options.gpus_per_actor else "cpu",
        "batch_size": runtime.batch_size,
        "batch_tokens": runtime.batch_tokens,
        "staging": str(staging),
    }
    with _data_context():
        dataset = ray.data.from_items(
            [{"number": i, "path": path} for i, path in enumerate(files)], override_num_blocks=len(files)
        )
        # One shard per block, so that the actors share the shards of one file rather than one actor taking them all.
        shards = (
            # Ray's annotations are narrower than Ray: `flat_map` types FN without the fn_kwargs it passes on, and
            # `map` types it as a function, though it takes a callable class and constructs it once per actor.
            dataset.flat_map(_read_shards, fn_kwargs=reading)  # type: ignore[arg-type]
            .repartition(target_num_rows_per_block=1)
            .map(
                _EmbedActor,  # type: ignore[arg-type]
                fn_constructor_kwargs=embed,
                concurrency=(1, options.actors),
                num_gpus=options.gpus_per_actor,
            )
        )
        try:
            yield from shards.iter_rows()
        except Exception as error:  # Ray wraps what a task raised; a user's mistake keeps its own message
            raise _searcher_error(error) or error from None


@contextmanager
def _data_context() -> Iterator[None]:
    """Ray Data's settings for this run, the caller's restored after it."""
    context = ray.data.DataContext.get_current()
    before = (context.enable_progress_bars, context.execution_options.preserve_order)
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True  # the last of repeated ids wins, as on the local path
    try:
        yield
    finally:
        context.enable_progress_bars, context.execution_options.preserve_order = before


def _read_shards(row: dict[str, Any], read: ReadOptions, stored: Any, shard_documents: int) -> Iterator[dict[str, Any]]:
    """Parse one source file with the local path's reader; the documents not stored yet, in shards.

    STORED is an object reference to the index's sorted document keys: every node maps one shared copy.
    """
    stored = ray.get(stored)
    errors: list[str] = []
    on_error = (lambda error: errors.append(str(error))) if read.skip_errors else None
    documents, received, empty = latest_documents(_file_records(row["path"], read.source_format, on_error))
    keys = np.array(
        [
            document_key(
                d.id, content_hash(d.text, d.phrasings), fields_json(d.fields), len(d.phrasings), len(d.heading)
            )
            for d in documents
        ],
        dtype=np.int64,
    )
    positions = np.searchsorted(stored, keys).clip(max=max(len(stored) - 1, 0))
    is_stored = (stored[positions] == keys) if len(stored) else np.zeros(len(keys), dtype=bool)
    pending = [document for document, known in zip(documents, is_stored, strict=True) if not known]
    counts = {
        "read": received,
        "empty": empty,
        "duplicates": received - len(documents) - empty,
        "unchanged": int(is_stored.sum()),
    }
    for start in range(0, max(len(pending), 1), shard_documents):
        chunk = pending[start : start + shard_documents]
        yield {
            "shard": f"{row['number']:06d}-{start // shard_documents:06d}",
            "errors": errors if start == 0 else [],
            "records": json.dumps([[d.id, d.text, d.fields, list(d.phrasings), d.heading] for d in chunk]),
        } | {name: count if start == 0 else 0 for name, count in counts.items()}


def _file_records(
    path: str, source_format: SourceFormat, on_error: Callable[[SourceError], None] | None
) -> Iterator[Record]:
    arguments = (source_format.text_fields, source_format.id_field, on_error)
    if "://" not in path and Path(path).is_dir():  # a directory of .txt/.md documents
        yield from read_records(path, *arguments)
        return
    filesystem, location = _filesystem(path)
    if Path(path).suffix.lower() == ".parquet":
        yield from _parquet_records(filesystem, location, path, source_format, on_error)
        return
    with filesystem.open_input_stream(location) as raw:
        yield from read_stream(io.TextIOWrapper(raw, encoding="utf-8", newline=""), path, *arguments)


def _parquet_records(
    filesystem: Any,
    location: str,
    name: str,
    source_format: SourceFormat,
    on_error: Callable[[SourceError], None] | None,
) -> Iterator[Record]:
    try:
        batches = pq.ParquetFile(filesystem.open_input_file(location)).iter_batches()
        rows = (row for batch in batches for row in batch.to_pylist())
        yield from read_rows(rows, name, source_format.text_fields, source_format.id_field, on_error)
    except pa.ArrowException as error:
        raise SourceError(f"{name}: not a readable Parquet file ({error})") from None


class _EmbedActor:
    """One model per actor, loaded once; embeds a shard as the local path would and stages it as Parquet."""

    def __init__(self, spec: EmbeddingSpec, device: str, batch_size: int, batch_tokens: int, staging: str) -> None:
        self.embedder = Embedder(spec.settings(), device)
        if self.embedder.spec != spec:
            raise ModelMismatchError(
                f"the model on this Ray worker ({self.embedder.model_dir}) differs from the index's"
            )
        self.batch_size, self.batch_tokens, self.staging = batch_size, batch_tokens, Path(staging)

    def __call__(self, shard: dict[str, Any]) -> dict[str, Any]:
        records = [
            Record(id, text, fields, tuple(phrasings), heading)
            for id, text, fields, phrasings, heading in json.loads(shard.pop("records"))
        ]
        if not records:
            return shard | {"staged": "", "embedded": 0}
        vectors: list[np.ndarray] = [np.empty(0, np.float32)] * len(records)
        spans: list[list[tuple[int, int]]] = [[]] * len(records)
        truncated, model_seconds = 0, 0.0
        documents = [(record.text, record.heading, record.phrasings) for record in records]
        for embedded in self.embedder.embed_documents(documents, self.batch_size, self.batch_tokens):
            start = 0
            for position, passages in zip(embedded.positions, embedded.spans or [], strict=True):
                end = start + len(passages) + len(records[position].phrasings)
                vectors[position], spans[position] = embedded.vectors[start:end].ravel(), passages
                start = end
            truncated += embedded.truncated
            model_seconds += embedded.model_seconds
        table = pa.table(
            {
                "id": [record.id for record in records],
                "text": [record.text for record in records],
                "fields": [json.dumps(record.fields) for record in records],
                "phrasings": [list(record.phrasings) for record in records],
                "content_hash": [content_hash(record.text, record.phrasings) for record in records],
                "heading": [record.heading for record in records],
                "spans": [[list(span) for span in passages] for passages in spans],
                "vectors": vectors,
            },
            metadata={"truncated": str(truncated), "model_seconds": str(model_seconds)},
        )
        # Written aside and renamed, so that a staged file is always whole.
        staged = self.staging / f"{shard['shard']}.parquet"
        partial = self.staging / f".{shard['shard']}.{uuid.uuid4().hex}.partial"
        pq.write_table(table, partial)
        partial.rename(staged)
        return shard | {"staged": str(staged), "embedded": len(records)}


def _arrivals(
    shards: Iterator[dict[str, Any]],
    tally: dict[str, int],
    skipped: list[SourceError],
    on_embedded: Callable[[int], None] | None,
) -> Iterator[Path]:
    """The staged files of arriving shards, while counting what the read tasks saw."""
    for shard in shards:
        for name in READ_COUNTS:
            tally[name] += shard[name]
        skipped += [SourceError(message) for message in shard["errors"]]
        if shard["staged"]:
            if on_embedded:
                on_embedded(shard["embedded"])
            yield Path(shard["staged"])


def _staged_shards(paths: Iterable[Path], dimension: int) -> Iterator[tuple[list[Record], EmbeddedDocuments]]:
    """Staged shards as `Index.add_embedded` takes them; each file is deleted once its shard is stored."""
    for path in paths:
        table = pq.read_table(path)
        columns = table.to_pydict()
        records = [
            Record(id, text, json.loads(fields), tuple(phrasings), heading)
            for id, text, fields, phrasings, heading in zip(
                columns["id"], columns["text"], columns["fields"], columns["phrasings"], columns["heading"], strict=True
            )
        ]
        metadata = {key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()}
        vectors = np.concatenate(
            [np.asarray(row, dtype=np.float32) for row in columns["vectors"]] or [np.empty(0, np.float32)]
        )
        yield (
            records,
            EmbeddedDocuments(
                list(range(len(records))),
                vectors.reshape(-1, dimension),
                int(metadata.get("truncated", 0)),
                float(metadata.get("model_seconds", 0)),
                [[(start, end) for start, end in passages] for passages in columns["spans"]],
            ),
        )
        path.unlink()  # reached when the next shard is asked for: this one is committed


def _searcher_error(error: BaseException | None) -> SearcherError | None:
    """The SearcherError a Ray task raised, found under Ray's wrappers (which copy its class, not its module).

    Ray's retry wrapper may raise it again with its own advice on further lines: only its first line is kept.
    """
    for _ in range(10):
        if error is None:
            return None
        if type(error).__module__ == SearcherError.__module__ and isinstance(error, SearcherError):
            return type(error)(str(error).splitlines()[0])
        error = getattr(error, "cause", None) or error.__cause__
    return None


@contextmanager
def _cluster(address: str | None) -> Iterator[None]:
    """The cluster at ADDRESS, or one already joined, or a local one started for this run and stopped after.

    Ray's own log lines are held back meanwhile: progress would interleave with the CLI's bar, and a task's
    error is raised here as the SearcherError it is, with its one-line message.
    """
    loggers = {name: logging.getLogger(name) for name in ("ray", "ray.data")}
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.CRITICAL)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.CRITICAL)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
