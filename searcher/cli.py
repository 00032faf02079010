"""The `searcher` command: parses flags, calls the library, renders with rich.

Every SearcherError and usage error ends as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from .config import BATCH_SIZE, BATCH_TOKENS, WRITE_BUFFER_MB, Settings, load_settings
from .demo import run_demo
from .errors import ConfigError, IndexCorruptError, InvalidFilterError, OutputError, SearcherError, SourceError
from .evaluate import RETRIEVAL_METRICS, STS_METRICS, BeirDataset, calibrate, evaluate, load_dataset, sweep
from .inbox import CONFUSABLE_SIMILARITY, SAMPLE_QUESTIONS, asked_after
from .index import Index, describe_index
from .inspect import ContextReport, PairCosine, inspector
from .passages import MAX_PASSAGES
from .paths import drop_index, index_path, list_indexes
from .plots import plot_context, plot_histogram
from .ratelimit import PUBLIC_RATE
from .search import Hit, Passage, search_response
from .sources import read_records
from .tune import GATE_METRICS, Hyperparameters, TrainingStep, TuneReport, tune
from .writes import AddReport

console = Console()
errors = Console(stderr=True)
LATEST_QUESTIONS = 20  # questions `searcher log NAME` shows


class OneLineErrors(TyperGroup):
    """Turns library and usage errors into `Error: ...` on stderr with an exit code, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        library_log = logging.getLogger("searcher")
        if not any(isinstance(handler, WarningLines) for handler in library_log.handlers):
            library_log.addHandler(WarningLines(logging.WARNING))
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except SearcherError as error:
            _fail(str(error), error.exit_code)
        except typer.TyperException as error:
            # `searcher` alone raises a usage error whose message is the help, already printed by rich.
            if error.format_message().strip():
                _fail(error.format_message(), error.exit_code)
            sys.exit(error.exit_code)
        except typer.Abort:
            _fail("aborted", 130)
        sys.exit(result if isinstance(result, int) else 0)


class WarningLines(logging.Handler):
    """The library's warnings as `Warning: ...` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        say(f"Warning: {record.getMessage()}", errors)


def say(message: str, stream: Console = console) -> None:
    """One line of plain output, never wrapped or colored by rich."""
    stream.print(message, soft_wrap=True, highlight=False, markup=False)


def _fail(message: str, code: int) -> None:
    say(f"Error: {message}", errors)
    sys.exit(code)


app = typer.Typer(
    cls=OneLineErrors,
    help="Semantic search: index documents with a BERT-family model and find them by meaning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Options and arguments that several commands share, declared once.
HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Directory of named indexes (default: $SEARCHER_HOME or ./indexes).")
]
IndexOption = Annotated[str, typer.Option("--index", "-i", help="Index name (under --home) or path.")]
IndexArgument = Annotated[str, typer.Argument(help="Index name (under --home) or path.")]
BatchSizeOption = Annotated[int | None, typer.Option(help=f"Texts per forward pass, at most (default {BATCH_SIZE}).")]
BatchTokensOption = Annotated[
    int | None, typer.Option(help=f"Padded tokens per forward pass, at most (default {BATCH_TOKENS}).")
]
PrecisionOption = Annotated[
    str | None, typer.Option(help="Model numerics: auto, fp32, bf16, fp16 or int8 (stored in the index).")
]
LayerOption = Annotated[
    str | None, typer.Option(help="Hidden layer to pool: auto or an integer (0 = embeddings, -1 = last).")
]
PoolingOption = Annotated[str | None, typer.Option(help="auto, mean, max or cls.")]
MaxLengthOption = Annotated[int | None, typer.Option(help="Token limit (default: the model's).")]
ChunkOption = Annotated[
    str | None,
    typer.Option(
        help="A text longer than the model reads: auto (split into passages of the model's limit), none (cut it), "
        "or passages of this many tokens."
    ),
]
ChunkOverlapOption = Annotated[
    int | None,
    typer.Option("--chunk-overlap", help="Tokens neighbouring passages share (default 96, at most half a passage)."),
]
DeviceOption = Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
LockTimeoutOption = Annotated[
    float | None,
    typer.Option("--lock-timeout", help="Seconds to wait for another writer (default: as long as it takes)."),
]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="Model id or directory (default: the bundled all-MiniLM-L6-v2).")
]
StrategyOption = Annotated[
    str,
    typer.Option(
        "--strategy", help="Word vectors from the last four layers (sum4, concat4, mean4) or one layer (layer:N)."
    ),
]
SubwordOption = Annotated[
    str, typer.Option("--subword", help="How a word's WordPiece vectors merge: first, mean or sum.")
]
PlotOption = Annotated[
    Path | None, typer.Option("--plot", help="Also write a PNG figure to this file (needs searcher[plot]).")
]


@app.command()
def index(
    source: Annotated[
        str,
        typer.Argument(
            help="A .jsonl/.csv/.tsv/.txt file, a directory of .txt/.md files, a BEIR directory, "
            "or - for JSONL on stdin."
        ),
    ],
    name: IndexOption,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file; flags override it.")] = None,
    model: ModelOption = None,
    layer: LayerOption = None,
    pooling: PoolingOption = None,
    text_field: Annotated[
        list[str] | None, typer.Option("--text-field", help="Field to embed (repeatable; joined with spaces).")
    ] = None,
    id_field: Annotated[str | None, typer.Option(help="Field holding the document id (default: _id, then id).")] = None,
    batch_size: BatchSizeOption = None,
    batch_tokens: BatchTokensOption = None,
    max_length: MaxLengthOption = None,
    chunk: ChunkOption = None,
    chunk_overlap: ChunkOverlapOption = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    index_type: Annotated[
        str | None,
        typer.Option("--index-type", help="A new index's vector structure: auto, flat, ivf, ivfpq or hnsw."),
    ] = None,
    write_buffer_mb: Annotated[
        int | None,
        typer.Option(
            "--write-buffer-mb",
            help=f"New vectors held in memory before they are merged into the saved structure (default "
            f"{WRITE_BUFFER_MB} MB).",
        ),
    ] = None,
    on_error: Annotated[
        str, typer.Option("--on-error", help="A malformed record: stop, or skip it and report.")
    ] = "stop",
    lock_timeout: LockTimeoutOption = None,
    engine: Annotated[
        str, typer.Option(help="local, or ray: embed on a Ray cluster (pip install 'searcher[ray]').")
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="Ray cluster to join (auto or HOST:PORT); default: a local one for this run."
        ),
    ] = None,
    actors: Annotated[int, typer.Option(min=1, help="Ray: embedding actors, each loading the model once.")] = 1,
    gpus_per_actor: Annotated[float, typer.Option("--gpus-per-actor", min=0, help="Ray: GPUs per actor (0: CPU).")] = 0,
    shard_size: Annotated[
        int, typer.Option("--shard-size", min=1, help="Ray: documents per shard (one actor call, one staged file).")
    ] = 1000,
    home: HomeOption = None,
) -> None:
    """Embed documents from SOURCE into an index (created if new; changed ids are replaced, unchanged skipped)."""
    if on_error not in ("stop", "skip"):
        raise ConfigError(f"invalid --on-error {on_error!r}: choose stop or skip")
    if engine not in ("local", "ray"):
        raise ConfigError(f"invalid --engine {engine!r}: choose local or ray")
    settings = load_settings(
        config,
        model=model,
        layer=layer,
        pooling=pooling,
        text_fields=text_field,
        id_field=id_field,
        batch_size=batch_size,
        batch_tokens=batch_tokens,
        max_length=max_length,
        chunk=chunk,
        chunk_overlap=chunk_overlap,
        device=device,
        precision=precision,
        index_type=index_type,
        write_buffer_mb=write_buffer_mb,
        home=str(home) if home else None,
    )
    skipped: list[SourceError] = []
    on_source_error = skipped.append if on_error == "skip" else None
    if engine == "ray":
        cluster = (ray_address, actors, gpus_per_actor, shard_size)
        report, indexed = _index_on_ray(source, name, settings, on_source_error, lock_timeout, cluster)
    else:
        records = read_records(source, settings.source.text_fields, settings.source.id_field, on_source_error)
        with Index.for_adding(name, settings, lock_timeout) as target, _progress() as progress:
            task = progress.add_task(f"Indexing into {target.name}", total=None)
            report = target.add(
                records,
                settings.runtime.batch_size,
                settings.runtime.batch_tokens,
                lambda done: progress.advance(task, done),
                write_buffer_mb=settings.runtime.write_buffer_mb,
            )
        indexed = target.name
    say(_summary(report, indexed))
    if skipped:
        say(f"Skipped {len(skipped):,} malformed records; the first: {skipped[0]}", errors)


def _index_on_ray(
    source: str,
    name: str,
    settings: Settings,
    on_error: Callable[[SourceError], None] | None,
    lock_timeout: float | None,
    cluster: tuple[str | None, int, float, int],
) -> tuple[AddReport, str]:
    # Imported here, not at the top: Ray is an optional extra and slow to import.
    from .distributed import RayOptions, index_on_ray

    indexed = index_path(name, settings.home).name
    with _progress() as progress:
        embedded = progress.add_task("Embedded on Ray", total=None)
        stored = progress.add_task(f"Stored into {indexed}", total=None)
        report = index_on_ray(
            source,
            name,
            settings,
            RayOptions(*cluster),
            lock_timeout,
            on_error,
            lambda done: progress.advance(embedded, done),
            lambda done: progress.advance(stored, done),
        )
    return report, indexed


@app.command()
def delete(
    ids: Annotated[list[str] | None, typer.Argument(help="External ids of the documents to delete.")] = None,
    *,  # keyword-only, so that the required --index may follow the optional ids
    name: IndexOption,
    from_file: Annotated[Path | None, typer.Option("--from", help="A file of ids, one per line.")] = None,
    lock_timeout: LockTimeoutOption = None,
    home: HomeOption = None,
) -> None:
    """Delete documents by id (from the arguments and/or --from FILE)."""
    wanted = list(ids or [])
    if from_file:
        try:
            wanted += [line.strip() for line in from_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise SourceError(f"cannot read {from_file}: {getattr(error, 'strerror', None) or error}") from None
    if not wanted:
        raise ConfigError("nothing to delete: give ids as arguments or with --from FILE")
    with Index.open(name, home, lock_timeout=lock_timeout) as target:
        deleted = target.delete(wanted)
    missing = len(set(wanted)) - len(deleted)
    say(f"Deleted {len(deleted):,} documents from {name}" + (f"; {missing:,} ids were not in it" if missing else ""))


@app.command()
def drop(
    name: IndexArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    home: HomeOption = None,
) -> None:
    """Delete an index and all its files."""
    if not yes and not typer.confirm(f"Delete index {name} and all its documents?"):
        raise typer.Abort()
    say(f"Deleted index {name} ({drop_index(name, home)})")


@app.command()
def check(
    name: IndexArgument,
    repair: Annotated[bool, typer.Option("--repair", help="Rebuild the derived parts from docs.sqlite first.")] = False,
    home: HomeOption = None,
) -> None:
    """Verify counts, vectors, keyword index and vector file; exit 1 if anything is wrong (nothing is changed
    without --repair)."""
    with Index.open(name, home) as target:
        problems = target.check(repair=repair)
        documents = 0 if problems else len(target)  # a damaged file may not even be counted
    for problem in problems:
        say(f"Problem: {problem}", errors)
    if problems:
        raise SearcherError(f"index {name} has {len(problems)} problem(s)" + ("" if repair else "; try --repair"))
    say(f"Index {name} is consistent: {documents:,} documents" + (" (repaired)" if repair else ""))


@app.command()
def reindex(
    name: IndexArgument,
    index_type: Annotated[
        str,
        typer.Option("--index-type", help="auto (flat up to 50,000 vectors, then ivfpq), flat, ivf, ivfpq or hnsw."),
    ],
    nprobe: Annotated[
        int | None, typer.Option(help="IVF cells scanned per query (default: 1/16 of them, at least 8).")
    ] = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search width (default 64).")] = None,
    lock_timeout: LockTimeoutOption = None,
    home: HomeOption = None,
) -> None:
    """Rebuild the vector structure from the stored vectors, without embedding anything again."""
    params = {key: value for key, value in {"nprobe": nprobe, "ef_search": ef_search}.items() if value is not None}
    started = time.perf_counter()
    with Index.open(name, home, lock_timeout=lock_timeout) as target:
        vectors = target.reindex(index_type, params)
    say(f"Rebuilt {name} as {vectors.kind} over {len(vectors):,} vectors in {time.perf_counter() - started:.1f} s")


class RateColumn(ProgressColumn):
    """Units (documents, steps) per second."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.1f} {self.unit}/s", style="progress.data.speed")


def _progress(unit: str = "docs") -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(unit),
        TimeRemainingColumn(),
        console=errors,
        disable=not errors.is_terminal,
        transient=True,
    )


def _summary(report: AddReport, name: str) -> str:
    rate = report.documents / report.seconds if report.seconds else 0.0
    parts = [
        f"Indexed {report.documents:,} documents into {name} in {report.seconds:.1f} s ({rate:,.1f} docs/s): "
        f"{report.added:,} new, {report.updated:,} updated, {report.unchanged:,} unchanged"
    ]
    if report.split:
        parts.append(f"{report.split:,} long texts split into passages ({report.passages:,} vectors of text in all)")
    if report.truncated:
        cut = f"a text cut to {report.max_length} tokens, or past {MAX_PASSAGES:,} passages"
        parts.append(f"{report.truncated:,} truncated ({cut})")
    if report.skipped_empty:
        parts.append(f"{report.skipped_empty:,} empty skipped")
    if report.duplicates:
        parts.append(f"{report.duplicates:,} repeated ids (the last one kept)")
    return "; ".join(parts)


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="The question or text to search for.")],
    name: IndexOption,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="Number of results.")] = 10,
    mode: Annotated[str, typer.Option(help="dense (by meaning), keyword (BM25) or hybrid.")] = "dense",
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Leave out results scoring below this.")
    ] = None,
    filters: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="Only documents whose fields match, as JSON: "
            '\'{"product": "billing", "lang": {"in": ["en", "de"]}}\'.',
        ),
    ] = None,
    json_output: JsonOption = False,
    device: DeviceOption = None,
    home: HomeOption = None,
) -> None:
    """Find the documents that best answer TEXT (dense scores are cosine similarities)."""
    with Index.open(name, home, device or "auto") as source:
        hits = source.search(text, k, mode, min_score, filters=_json_filter(filters) if filters else None)
        threshold = source.manifest.threshold(mode)
    if json_output:
        _print_json(search_response(name, text, mode, threshold, hits), strict=True)
        return
    faq = any(hit.answer is not None for hit in hits)
    columns = ("matched question", "answer") if faq else ("passage",)
    table = Table("rank", "score", "id", *columns, title=text, title_justify="left")
    for rank, hit in enumerate(hits, start=1):
        cells = (hit.question or "", _snippet(hit.answer or "")) if faq else (_passage(hit),)
        table.add_row(str(rank), f"{hit.score:.3f}", hit.id, *cells, style="dim" if hit.below_threshold else None)
    console.print(table)
    if not hits:
        say("No results" + (f" scoring at least {min_score}." if min_score is not None else "."))
    elif hits[0].below_threshold:
        say(f"No good match: the best score {hits[0].score:.3f} is below the calibrated threshold {threshold:.3f}.")


def _json_filter(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise InvalidFilterError(f"--filter is not valid JSON: {error}") from None


def _snippet(text: str, width: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _passage(hit: Hit) -> Text:
    """The hit's passage on one line, the words a keyword query matched in bold; "…" where the text goes on."""
    passage = hit.passage or Passage(0, len(hit.text), hit.text)
    pieces: list[tuple[str, str]] = [("…" if passage.start else "", "")]
    position = 0
    for low, high in ((a - passage.start, b - passage.start) for a, b in passage.highlights):
        pieces += [(passage.text[position:low], ""), (passage.text[low:high], "bold yellow")]
        position = high
    pieces += [(passage.text[position:], ""), ("…" if passage.end < len(hit.text) else "", "")]
    return Text.assemble(*((re.sub(r"\s+", " ", piece), style) for piece, style in pieces))


@app.command()
def serve(
    names: Annotated[list[str], typer.Option("--index", "-i", help="An index to serve (repeat for several).")],
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env",
            help="Environment variable holding an API key, then required as `Authorization: Bearer KEY` "
            "on every endpoint but /healthz, /readyz and the pages (/, /inbox, /audit, /widget.js, /assets).",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes, each loading the indexes and models once.")
    ] = 1,
    cors_origins: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin", help="Let web pages from this origin call the API (repeat for several); off by default."
        ),
    ] = None,
    lock_timeout: Annotated[
        float | None,
        typer.Option(
            "--lock-timeout",
            min=0,
            help="Seconds a write waits while another process writes the index, then answers 409 (default 5).",
        ),
    ] = None,
    readers: Annotated[
        int | None,
        typer.Option(
            "--readers",
            min=1,
            help="Threads per index answering searches side by side, each with its own database connection "
            "(default 4).",
        ),
    ] = None,
    metrics_public: Annotated[
        bool,
        typer.Option("--metrics-public", help="Serve /metrics without the API key (to a scraper that has none)."),
    ] = False,
    log_queries: Annotated[
        bool,
        typer.Option(
            "--log-queries",
            help="Log every served index's questions (their text, mode, filters and hits) whatever its own setting.",
        ),
    ] = False,
    log_days: Annotated[
        int | None,
        typer.Option("--log-days", min=1, help="Days the question log keeps a row (default: each index's own)."),
    ] = None,
    public_key_env: Annotated[
        str | None,
        typer.Option(
            "--public-key-env",
            help="Environment variable holding a public key for web pages (the /widget.js snippet): it may only "
            "search, within --public-rate. Needs --api-key-env.",
        ),
    ] = None,
    public_indexes: Annotated[
        list[str] | None,
        typer.Option("--public-index", help="An index the public key may search (repeat for several; default all)."),
    ] = None,
    public_rate: Annotated[
        int,
        typer.Option("--public-rate", min=1, help="Searches a minute the public key allows each client address."),
    ] = PUBLIC_RATE,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Serve beyond this machine without an API key (when something in front checks callers)."
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Serve indexes over HTTP: JSON search and document updates for support tools; API docs at /docs."""
    # Imported here, not at the top: FastAPI and uvicorn would slow down every other command.
    from .server import ServerConfig, is_loopback, run

    config = ServerConfig(tuple(names), str(home) if home else None, api_key_env, tuple(cors_origins or ()))
    config = replace(config, metrics_public=metrics_public, log_queries=log_queries, log_days=log_days)
    config = replace(
        config, public_key_env=public_key_env, public_indexes=tuple(public_indexes or ()), public_rate=public_rate
    )
    if lock_timeout is not None:
        config = replace(config, lock_timeout=lock_timeout)
    if readers is not None:
        config = replace(config, readers=readers)
    if api_key_env is None and not is_loopback(host):
        if not insecure:
            raise ConfigError(
                f"serving on {host} without an API key lets anyone who can reach it read and change the indexes: "
                "give --api-key-env, or --insecure if something in front of the server checks callers"
            )
        say(f"Warning: anyone who can reach {host}:{port} can read and change the indexes (no API key)", errors)
    config.check()  # before announcing: a missing index or key ends in its own message, not after "Serving"
    say(f"Serving {', '.join(names)} at http://{host}:{port} (API docs: /docs); Ctrl+C stops")
    run(config, host, port, workers)


@app.command("log")
def log_command(
    name: IndexArgument,
    enabled: Annotated[
        bool | None,
        typer.Option("--on/--off", help="Log this index's questions (their text, mode, filters and hits), or stop."),
    ] = None,
    days: Annotated[int | None, typer.Option("--days", min=1, help="Days the log keeps a row.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Delete every logged question and feedback.")] = False,
    json_output: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Show the question log's setting and latest questions, after --on/--off/--days change the setting and
    --clear empties the log."""
    with Index.open(name, home) as target:
        if enabled is not None or days is not None:
            target.set_logging(target.manifest.log_queries if enabled is None else enabled, days)
        if clear:
            removed = target.query_log().clear()
            say(f"Cleared the question log of {name}: {removed:,} rows removed", errors if json_output else console)
        manifest = target.manifest
        latest = target.query_log().latest(LATEST_QUESTIONS)
    if json_output:
        queries = [entry.as_json() for entry in latest]
        _print_json({"index": name, "logging": manifest.log_queries, "days": manifest.log_days, "queries": queries})
        return
    state = "on" if manifest.log_queries else "off"
    say(f"Question log of {name}: {state}, rows kept {manifest.log_days:,} days")
    if not latest:
        say("No questions logged.")
        return
    table = Table("time", "query", "mode", "best id", "best score", "under threshold", title="latest questions")
    for entry in latest:
        best = entry.hits[0] if entry.hits else None
        table.add_row(
            datetime.fromtimestamp(entry.time).strftime("%Y-%m-%d %H:%M:%S"),
            _snippet(entry.query, 60),
            entry.mode,
            best[0] if best else "",
            f"{best[1]:.3f}" if best else "",
            "yes" if entry.below_threshold else "",
        )
    console.print(table)


@app.command()
def feedback(
    name: IndexArgument,
    query_text: Annotated[str | None, typer.Option("--query", help="The question the feedback is about.")] = None,
    document: Annotated[str | None, typer.Option("--id", help="The id of the document that was offered.")] = None,
    unhelpful: Annotated[bool, typer.Option("--unhelpful", help="The document did not answer the question.")] = False,
    export: Annotated[
        Path | None,
        typer.Option("--export", help='Write the helpful pairs as {"query", "id"} lines for `searcher tune --pairs`.'),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Record whether a document answered a question, or --export the helpful pairs for tuning."""
    with Index.open(name, home) as target:
        if export is not None:
            say(f"Wrote {target.query_log().export_pairs(export):,} helpful pairs to {export}")
            return
        if query_text is None or document is None:
            raise ConfigError("give --query and --id to record feedback, or --export FILE")
        target.query_log().feedback(query_text, document, not unhelpful)
    say(f"Recorded that {document} was {'not ' if unhelpful else ''}helpful for that question in {name}")


@app.command()
def inbox(
    name: IndexArgument,
    since: Annotated[
        str | None, typer.Option("--since", help="Only questions asked in this past span: 30m, 12h, 7d, 2w.")
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option("--min-score", help='The "not covered" cut, instead of the one `searcher calibrate` stored.'),
    ] = None,
    json_output: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """The logged questions the index does not cover, grouped by meaning, biggest group first, each with its
    nearest entry and a suggestion: add the questions as a wording of it, or write a new entry."""
    start = asked_after(since)  # a bad span is refused before the index is opened
    with Index.open(name, home) as target:
        groups = target.inbox(start, min_score)
    if json_output:
        _print_json({"index": name, "groups": [group.as_json() for group in groups]})
        return
    if not groups:
        say(f"No uncovered questions in the log of {name}" + (f" over the last {since}" if since else ""))
        return
    table = Table("size", "questions", "nearest entry", "score", "suggestion", title=f"inbox of {name}")
    for group in groups:
        shown = "\n".join(_snippet(question, 70) for question in group.queries[:SAMPLE_QUESTIONS])
        more = group.size - min(group.size, SAMPLE_QUESTIONS)
        table.add_row(
            str(group.size),
            shown + (f"\n… and {more:,} more" if more else ""),
            group.nearest_id or "",
            "" if group.nearest_score is None else f"{group.nearest_score:.3f}",
            f"add as a wording of {group.nearest_id}" if group.suggestion == "alternative" else "new entry",
        )
    console.print(table)


@app.command()
def audit(
    name: IndexArgument,
    min_similarity: Annotated[
        float,
        typer.Option("--min-similarity", min=-1.0, max=1.0, help="Entries at least this alike are confusable."),
    ] = CONFUSABLE_SIMILARITY,
    json_output: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Entries the model can barely tell apart, entries no logged question found first, and entries whose own
    question does not find them first."""
    with Index.open(name, home) as target:
        report = target.audit(min_similarity)
    if json_output:
        _print_json(report.as_json())
        return
    table = Table("entry", "entry", "similarity", title=f"confusable entries of {name} (≥ {min_similarity:g})")
    for first, second, score in report.confusable:
        table.add_row(first, second, f"{score:.3f}")
    console.print(table)
    say(f"Never found first by a logged question ({len(report.never_matched):,}): " + _ids(report.never_matched))
    say(
        f"Not found first by their own question ({len(report.not_self_retrieved):,}): "
        + _ids(report.not_self_retrieved)
    )


def _ids(ids: list[str], shown: int = 20) -> str:
    return ", ".join(ids[:shown]) + (f" … and {len(ids) - shown:,} more" if len(ids) > shown else "") or "none"


@app.command()
def info(
    name: IndexArgument,
    json_output: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Show an index's manifest, document count and size on disk."""
    details = describe_index(name, home)
    if json_output:
        _print_json(details)
        return
    table = Table("key", "value", title=f"index {details['name']}", title_justify="left", show_header=False)
    table.add_row("path", details["path"])
    table.add_row("documents", f"{details['documents']:,}")
    table.add_row("size on disk", _megabytes(details["size_bytes"]))
    for key, value in details["manifest"].items():
        table.add_row(key, str(value))
    console.print(table)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


@app.command("list")
def list_command(json_output: JsonOption = False, home: HomeOption = None) -> None:
    """List the indexes under the home directory (an unusable one with what is wrong with it)."""
    rows = [_listing(name, home) for name in list_indexes(home)]
    if json_output:
        _print_json(rows)
        return
    table = Table("name", "documents", "model", "size on disk")
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], "", f"unusable: {row['error']}", "")
        else:
            table.add_row(row["name"], f"{row['documents']:,}", row["model"], _megabytes(row["size_bytes"]))
    console.print(table)


def _listing(name: str, home: Path | None) -> dict[str, Any]:
    try:
        details = describe_index(name, home)
    except SearcherError as error:  # one damaged index must not hide the others
        return {"name": name, "path": str(index_path(name, home)), "error": str(error)}
    return {
        "name": name,
        "documents": details["documents"],
        "model": details["manifest"]["model"],
        "size_bytes": details["size_bytes"],
        "path": details["path"],
    }


@app.command()
def demo() -> None:
    """Index a sample support FAQ and answer questions that share no keywords with their answers."""
    say("Indexing examples/faq.jsonl (a support FAQ for the fictional Nimbus Notes) with the bundled model…")
    with tempfile.TemporaryDirectory(prefix="searcher-demo-") as home:
        answers = run_demo(home)
    table = Table("customer question", "matched FAQ entry", "score", "", title="Questions → best FAQ match")
    for answer in answers:
        table.add_row(
            answer.question, answer.matched_question, f"{answer.hit.score:.3f}", "✓" if answer.correct else "✗"
        )
    console.print(table)
    correct = sum(answer.correct for answer in answers)
    say(f"{correct} of {len(answers)} questions found their FAQ entry, with no shared keywords.")


@app.command()
def tokens(
    text: Annotated[str, typer.Argument(help="Text to tokenize.")],
    pair: Annotated[str | None, typer.Option("--pair", help="A second sentence (segment 1).")] = None,
    model: ModelOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show WordPiece tokens with [CLS]/[SEP], vocabulary ids, segment ids and attention mask."""
    view = inspector(model).tokens(text, pair)
    if json_output:
        _print_json({"tokens": view.tokens, "ids": view.ids, "segments": view.segments, "mask": view.mask})
        return
    table = Table("position", "token", "id", "segment", "mask")
    for position, row in enumerate(zip(view.tokens, view.ids, view.segments, view.mask, strict=True)):
        table.add_row(str(position), *map(str, row))
    console.print(table)


@app.command()
def words(
    text: Annotated[str, typer.Argument(help="Text whose words to embed.")],
    strategy: StrategyOption = "sum4",
    subword: SubwordOption = "mean",
    per_token: Annotated[bool, typer.Option("--tokens", help="One vector per token instead of per word.")] = False,
    dims: Annotated[
        int | None, typer.Option("--dims", min=1, help="Print only the first N values of each vector.")
    ] = None,
    model: ModelOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one contextual vector per word (WordPiece pieces merged back) or per token."""
    found = inspector(model)
    if per_token:
        key, labels = "tokens", ("position", "token")
        rows = [
            ({"position": i, "token": token}, str(i), token, vector)
            for i, (token, vector) in enumerate(found.token_vectors(text, strategy))
        ]
    else:
        key, labels = "words", ("word", "pieces")
        rows = [
            ({"word": w.word, "pieces": w.pieces}, w.word, " ".join(w.pieces), w.vector)
            for w in found.word_vectors(text, strategy, subword)
        ]
    if json_output:
        _print_json(
            {"strategy": strategy, key: [entry | {"vector": vector[:dims].tolist()} for entry, _, _, vector in rows]}
        )
        return
    shown = dims or 6
    table = Table(*labels, "size", f"first {shown} values", title=f"{key} ({strategy})", title_justify="left")
    for _, first, second, vector in rows:
        table.add_row(first, second, str(len(vector)), " ".join(f"{value:+.3f}" for value in vector[:shown]))
    console.print(table)


@app.command()
def context(
    text: Annotated[str, typer.Argument(help="Text in which WORD occurs two or more times.")],
    word: Annotated[str, typer.Option("--word", "-w", help="The word to follow through the layers.")],
    strategy: StrategyOption = "sum4",
    plot: PlotOption = None,
    model: ModelOption = None,
    json_output: JsonOption = False,
) -> None:
    """Cosine similarity between the occurrences of a word at every layer: context at work."""
    report = inspector(model).context_similarity(text, word, strategy)
    if plot:
        plot_context(report, plot)
    if json_output:
        _print_json(
            {
                "word": report.word,
                "positions": report.positions,
                "layers": [{"layer": layer, "pairs": _pairs(pairs)} for layer, pairs in enumerate(report.layers)],
                "strategy": {"name": report.strategy, "pairs": _pairs(report.strategy_pairs)},
            }
        )
        return
    _context_table(report)
    if plot:
        say(f"Wrote {plot}")


def _pairs(pairs: list[PairCosine]) -> list[dict[str, Any]]:
    return [{"a": pair.a, "b": pair.b, "cosine": pair.cosine} for pair in pairs]


def _context_table(report: ContextReport) -> None:
    columns = [f"{report.word}@{pair.a} vs @{pair.b}" for pair in report.strategy_pairs]
    table = Table(
        "layer",
        *columns,
        title=f"{report.word!r} at token positions {report.positions}: cosine similarity",
        title_justify="left",
    )
    for layer, pairs in enumerate(report.layers):
        table.add_row("0 (embeddings)" if layer == 0 else str(layer), *(f"{pair.cosine:.3f}" for pair in pairs))
    table.add_row(report.strategy, *(f"{pair.cosine:.3f}" for pair in report.strategy_pairs), style="bold")
    console.print(table)


@app.command()
def hist(
    text: Annotated[str, typer.Argument(help="Text containing the token.")],
    token: Annotated[
        int, typer.Option("--token", help="Token position, as `searcher tokens` numbers them ([CLS] = 0).")
    ],
    layer: Annotated[
        int, typer.Option("--layer", help="Hidden layer: 0 = embeddings, negative counts from the end.")
    ] = -1,
    plot: PlotOption = None,
    model: ModelOption = None,
    json_output: JsonOption = False,
) -> None:
    """Distribution of one token's feature values at one layer."""
    stats = inspector(model).feature_stats(text, token, layer)
    if plot:
        plot_histogram(stats, plot)
    summary = {
        "token": stats.token,
        "position": stats.position,
        "layer": stats.layer,
        "features": len(stats.values),
        "min": stats.minimum,
        "max": stats.maximum,
        "mean": float(stats.values.mean()),
        "std": float(stats.values.std()),
        "percentiles": stats.percentiles,
    }
    if json_output:
        _print_json(summary)
        return
    table = Table(
        "statistic",
        "value",
        title=f"token {stats.token!r} at position {stats.position}, layer {stats.layer}",
        title_justify="left",
    )
    for key in ("features", "min", "max", "mean", "std"):
        table.add_row(key, f"{summary[key]:.4f}" if isinstance(summary[key], float) else str(summary[key]))
    for percent, value in stats.percentiles.items():
        table.add_row(f"p{percent}", f"{value:.4f}")
    console.print(table)
    if plot:
        say(f"Wrote {plot}")


@app.command()
def embed(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed.")] = None,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read one text per line from standard input.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of standard output.")] = None,
    output_format: Annotated[
        str | None, typer.Option("--format", help="npy or jsonl (default: npy for a .npy --out, else jsonl).")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--index", "-i", help="Embed exactly as this index does (its manifest's settings).")
    ] = None,
    model: ModelOption = None,
    layer: LayerOption = None,
    pooling: PoolingOption = None,
    max_length: MaxLengthOption = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    home: HomeOption = None,
) -> None:
    """Sentence vectors exactly as the indexer makes them (L2-normalized float32)."""
    texts = [line.strip() for line in sys.stdin if line.strip()] if stdin else list(texts or [])
    if not texts:
        raise ConfigError("nothing to embed: give texts as arguments or use --stdin")
    output_format = output_format or ("npy" if out and out.suffix == ".npy" else "jsonl")
    if output_format not in ("npy", "jsonl"):
        raise ConfigError(f"invalid format {output_format!r}: choose npy or jsonl")
    if output_format == "npy" and out is None:
        raise ConfigError("--format npy needs --out FILE.npy")
    if name:
        with Index.open(name, home, device or "auto") as source:
            embedder = source.embedder
    else:
        from .embedder import Embedder  # torch: imported only by the commands that run a model

        settings = load_settings(
            model=model, layer=layer, pooling=pooling, max_length=max_length, precision=precision, device=device
        )
        embedder = Embedder(settings.embedding, settings.runtime.device)
    vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
    truncated = 0
    for batch in embedder.embed_texts(texts):
        vectors[batch.positions] = batch.vectors
        truncated += batch.truncated
    _write_vectors(texts, vectors, output_format, out)
    if truncated:
        say(f"Warning: {truncated} text(s) longer than {embedder.max_length} tokens were truncated", errors)
    if out:
        say(
            f"Wrote {len(texts)} vectors of dimension {embedder.dimension} to {out} "
            f"({embedder.model_id}, layer {embedder.layer}, {embedder.pooling} pooling, {embedder.precision})"
        )


def _write_vectors(texts: list[str], vectors: np.ndarray, output_format: str, out: Path | None) -> None:
    try:
        if output_format == "npy" and out is not None:  # `embed` refuses npy without --out
            np.save(out, vectors)
            return
        lines = "".join(
            json.dumps({"text": t, "vector": v.tolist()}) + "\n" for t, v in zip(texts, vectors, strict=True)
        )
        if out:
            out.write_text(lines, encoding="utf-8")
        else:
            sys.stdout.write(lines)
    except OSError as error:
        raise OutputError(f"cannot write {out}: {error.strerror}") from None


@app.command("eval")
def eval_command(
    dataset: Annotated[
        Path, typer.Argument(help="A BEIR directory (corpus, queries, qrels) or an STS-B file or directory.")
    ],
    split: Annotated[str, typer.Option(help="Which qrels/SPLIT.tsv (or sts-SPLIT.csv) to score.")] = "test",
    model: ModelOption = None,
    layer: Annotated[str, typer.Option(help="auto or integers, comma-separated to compare several.")] = "auto",
    pooling: Annotated[str, typer.Option(help="auto, mean, max, cls; comma-separated to compare several.")] = "auto",
    mode: Annotated[str, typer.Option(help="Search modes to score, comma-separated.")] = "dense",
    chunk: Annotated[
        str,
        typer.Option(help="auto, none or passage tokens (see `index --chunk`); comma-separated to compare several."),
    ] = "auto",
    chunk_overlap: Annotated[
        str | None,
        typer.Option("--chunk-overlap", help="Tokens neighbouring passages share; comma-separated to compare several."),
    ] = None,
    max_length: MaxLengthOption = None,
    batch_size: BatchSizeOption = None,
    batch_tokens: BatchTokensOption = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the JSON results to this file.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Score retrieval (nDCG@10, recall, MRR, top-1) or STS correlation on a dataset, via a temporary index."""
    data = load_dataset(dataset, split)
    base = Settings().replace(
        model=model,
        max_length=max_length,
        batch_size=batch_size,
        batch_tokens=batch_tokens,
        device=device,
        precision=precision,
    )
    overlaps = [_overlap(value) for value in _split_list(chunk_overlap)] if chunk_overlap else [None]
    configs = sweep(_split_list(layer), _split_list(pooling), base, _split_list(chunk), overlaps)
    results = evaluate(data, configs, _split_list(mode), progress=lambda step: say(f"Evaluating {step}…", errors))
    report = results[0] if len(results) == 1 else results
    if out:
        try:
            out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            raise OutputError(f"cannot write {out}: {error.strerror}") from None
    if json_output:
        _print_json(report)
    else:
        _results_table(results, f"{data.name} ({split})")


@app.command("calibrate")
def calibrate_command(
    dataset: Annotated[
        Path, typer.Argument(help="A BEIR directory whose corpus is in the index, with judged queries.")
    ],
    name: IndexOption,
    target_precision: Annotated[
        float, typer.Option("--target-precision", help="Top-1 precision the answered questions must reach.")
    ] = 0.9,
    split: Annotated[str, typer.Option(help="Which qrels/SPLIT.tsv holds the judgments.")] = "test",
    mode: Annotated[str, typer.Option(help="The search mode to calibrate: dense, keyword or hybrid.")] = "dense",
    home: HomeOption = None,
) -> None:
    """Choose the lowest score that still gives the wanted top-1 precision, and store it in the index."""
    data = load_dataset(dataset, split)
    if not isinstance(data, BeirDataset):
        raise ConfigError(f"{dataset}: calibration needs a BEIR directory with judged queries")
    with Index.open(name, home) as target:
        result = calibrate(target, data, target_precision, mode)
    say(
        f"Threshold {result.threshold:.4f} for {mode} search in {name}: top-1 precision {result.precision:.3f} "
        f"on the {result.coverage:.1%} of {result.queries:,} questions scoring at least that; "
        'the others now get "no good match".'
    )


@app.command("tune")
def tune_command(
    source: Annotated[str, typer.Argument(help="The documents, as for `searcher index` (a FAQ, a BEIR directory…).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the tuned model to (must not exist).")],
    pairs: Annotated[
        list[Path] | None,
        typer.Option("--pairs", help='JSONL of {"query": …, "id": …}: questions and the document that answers each.'),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Also learn the judged queries of a BEIR directory's qrels/SPLIT.tsv.")
    ] = None,
    check_split: Annotated[
        str | None,
        typer.Option("--check-split", help="Check on this qrels split instead of on pairs held back from training."),
    ] = None,
    base: Annotated[str | None, typer.Option(help="Model to start from (default: the bundled one).")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Passes over the pairs (default: enough for 100 steps, at most 3).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="Pairs per step; each query's negatives are the other pairs' documents.")
    ] = Hyperparameters.batch_size,
    learning_rate: Annotated[float, typer.Option(help="AdamW's peak learning rate.")] = Hyperparameters.learning_rate,
    seed: Annotated[int, typer.Option(help="Seeds shuffling, held-back pairs and dropout.")] = Hyperparameters.seed,
    max_minutes: Annotated[
        float | None, typer.Option("--max-minutes", help="Stop training after the step that passes this; still checks.")
    ] = None,
    device: DeviceOption = None,
    force: Annotated[bool, typer.Option("--force", help="Write the tuned model even if it scores worse.")] = False,
    text_field: Annotated[list[str] | None, typer.Option("--text-field", help="As for `searcher index`.")] = None,
    id_field: Annotated[str | None, typer.Option(help="As for `searcher index`.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Fine-tune the model on SOURCE's own pairs and on feedback; write it only if it scores no worse."""
    with _progress("steps") as progress:
        task = progress.add_task("Tuning", total=None)

        def advance(step: TrainingStep) -> None:
            description = f"Epoch {step.epoch}/{step.epochs}, loss {step.loss:.3f}"
            progress.update(task, completed=step.step, total=step.steps, description=description)

        report = tune(
            source,
            out,
            pairs_files=pairs or [],
            split=split,
            check_split=check_split,
            base=base,
            hyperparameters=Hyperparameters(epochs, batch_size, learning_rate, seed),
            max_minutes=max_minutes,
            device=device or "auto",
            force=force,
            text_fields=text_field or [],
            id_field=id_field,
            on_step=advance,
            on_phase=lambda message: say(f"{message}…", errors),
        )
    if json_output:
        _print_json(report.as_dict())
    else:
        _tune_summary(report)


def _tune_summary(report: TuneReport) -> None:
    gate = report.gate
    table = Table("metric", "base", "tuned", title=f"{gate.queries:,} {gate.checked_on}", title_justify="left")
    for metric in GATE_METRICS:
        table.add_row(metric, f"{gate.before[metric]:.4f}", f"{gate.after[metric]:.4f}")
    console.print(table)
    learned = ", ".join(f"{count:,} {kind}" for kind, count in report.pairs.items() if count)
    stopped = (
        f" (stopped at --max-minutes after {report.steps} of {report.planned_steps})" if report.stopped_early else ""
    )
    say(f"Tuned on {learned} pairs: {report.steps:,} steps{stopped} in {report.seconds['train']:.0f} s")
    if report.records_without_pairs:
        say(f"{report.records_without_pairs:,} of {report.records:,} records gave no pairs of their own (only a text)")
    note = " although it scores worse (--force)" if report.gate.worse else ""
    say(f"Wrote {report.out}{note}; use it with --model {report.out}")


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _results_table(results: list[dict[str, Any]], title: str) -> None:
    """Configurations side by side, the best value of each metric in bold with a star."""
    metrics = STS_METRICS if "spearman" in results[0] else RETRIEVAL_METRICS
    labels = [_config_label(r["config"]) for r in results]
    table = Table("metric", *labels, title=title, title_justify="left")
    for metric in (*metrics, "passage_accuracy"):
        if not all(metric in r for r in results):
            continue
        best = max(r[metric] for r in results)
        cells = [
            f"[bold]{r[metric]:.4f} ★[/bold]" if len(results) > 1 and r[metric] == best else f"{r[metric]:.4f}"
            for r in results
        ]
        table.add_row(metric, *cells)
    for key in results[0]["seconds"]:
        table.add_row(f"{key} s", *(f"{r['seconds'][key]:.1f}" for r in results))
    if "vectors" in results[0]:
        table.add_row("vectors per doc", *(f"{r['vectors'] / max(r['docs'], 1):.2f}" for r in results))
        table.add_row("index MB", *(f"{r['index_bytes'] / 1e6:.1f}" for r in results))
    console.print(table)
    if "queries" in results[0]:
        say(f"{results[0]['queries']:,} judged queries, {results[0]['docs']:,} documents")
    else:
        say(f"{results[0]['pairs']:,} sentence pairs")


def _config_label(config: dict[str, Any]) -> str:
    """What a result's configuration is, in a few words: layer, pooling, passages (retrieval), search mode."""
    label = f"layer {config['layer']} {config['pooling']}"
    if "mode" in config:
        passages = f"chunk {config['chunk']}/{config['chunk_overlap']}" if config["chunk"] else "chunk none"
        label += f" {passages} {config['mode']}"
    return label


def _overlap(value: str) -> int:
    if not value.strip().isdigit():
        raise ConfigError(f"invalid chunk overlap {value!r}: give a number of tokens")
    return int(value)


def _print_json(value: Any, strict: bool = False) -> None:
    """VALUE as JSON; STRICT: refused, rather than printed as the NaN or Infinity that JSON parsers reject, where
    it holds numbers JSON cannot (only a damaged index gives them)."""
    try:
        typer.echo(json.dumps(value, ensure_ascii=False, indent=2, allow_nan=not strict))
    except ValueError:
        raise IndexCorruptError("a result holds a number JSON cannot (NaN or infinity): run `searcher check`") from None


def main() -> None:
    app()
