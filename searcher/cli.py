"""The `searcher` command: parses flags, calls the library, renders with rich.

Every SearcherError and usage error ends as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskProgressColumn, TextColumn, TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from .config import load_settings
from .demo import run_demo
from .errors import SearcherError
from .index import AddReport, Index, list_indexes
from .sources import read_records

console = Console()
errors = Console(stderr=True)


class OneLineErrors(TyperGroup):
    """Turns library and usage errors into `Error: ...` on stderr with an exit code, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
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


def _fail(message: str, code: int) -> None:
    errors.print(f"Error: {message}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


app = typer.Typer(
    cls=OneLineErrors,
    help="Semantic search: index documents with a BERT-family model and find them by meaning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

HomeOption = Annotated[Optional[Path], typer.Option("--home", help="Directory of named indexes [default: $SEARCHER_HOME or ./indexes].")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command()
def index(
    source: Annotated[str, typer.Argument(help="A .jsonl/.csv/.tsv/.txt file, a directory of .txt/.md files, a BEIR directory, or - for JSONL on stdin.")],
    name: Annotated[str, typer.Option("--index", "-i", help="Index name (under --home) or path.")],
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML settings file; flags override it.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model id or directory [default: the bundled all-MiniLM-L6-v2].")] = None,
    layer: Annotated[Optional[str], typer.Option(help="Hidden layer to pool: auto or an integer (0 = embeddings, -1 = last).")] = None,
    pooling: Annotated[Optional[str], typer.Option(help="auto, mean, max or cls.")] = None,
    text_field: Annotated[Optional[list[str]], typer.Option("--text-field", help="Field to embed (repeatable; joined with spaces).")] = None,
    id_field: Annotated[Optional[str], typer.Option(help="Field holding the document id [default: _id, then id].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Texts per forward pass.")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Token limit [default: the model's].")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or mps.")] = None,
    home: HomeOption = None,
) -> None:
    """Embed documents from SOURCE into an index (created if new; existing ids are replaced)."""
    settings = load_settings(
        config, model=model, layer=layer, pooling=pooling, text_fields=text_field, id_field=id_field,
        batch_size=batch_size, max_length=max_length, device=device, home=str(home) if home else None,
    )
    records = list(read_records(source, settings.text_fields, settings.id_field))
    with Index.open_or_create(name, settings) as target:
        with _progress() as progress:
            task = progress.add_task(f"Indexing into {target.name}", total=len(records))
            report = target.add(records, settings.batch_size, lambda done: progress.advance(task, done))
        console.print(_summary(report, target.name), highlight=False, soft_wrap=True)


class RateColumn(ProgressColumn):
    """Documents per second."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.1f} docs/s", style="progress.data.speed")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=errors,
        disable=not errors.is_terminal,
        transient=True,
    )


def _summary(report: AddReport, name: str) -> str:
    rate = report.embedded / report.seconds if report.seconds else 0.0
    parts = [f"Indexed {report.embedded:,} documents into {name} in {report.seconds:.1f} s ({rate:,.1f} docs/s): "
             f"{report.added:,} new, {report.updated:,} replaced"]
    if report.truncated:
        parts.append(f"{report.truncated:,} longer than {report.max_length} tokens were truncated")
    if report.skipped_empty:
        parts.append(f"{report.skipped_empty:,} empty skipped")
    if report.duplicates:
        parts.append(f"{report.duplicates:,} repeated ids (the last one kept)")
    return "; ".join(parts)


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="The question or text to search for.")],
    name: Annotated[str, typer.Option("--index", "-i", help="Index name (under --home) or path.")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="Number of results.")] = 10,
    json_output: JsonOption = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    home: HomeOption = None,
) -> None:
    """Find the documents closest in meaning to TEXT (scores are cosine similarities)."""
    with Index.open(name, home, device) as source:
        hits = source.search(text, k)
    if json_output:
        results = [{"rank": rank, "id": hit.id, "score": hit.score, "text": hit.text, "fields": hit.fields}
                   for rank, hit in enumerate(hits, start=1)]
        _print_json({"query": text, "index": name, "results": results})
        return
    table = Table("rank", "score", "id", "text", title=f"{text}", title_justify="left")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.id, _snippet(hit.text))
    console.print(table)


def _snippet(text: str, width: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@app.command()
def info(
    name: Annotated[str, typer.Argument(help="Index name (under --home) or path.")],
    json_output: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Show an index's manifest, document count and size on disk."""
    with Index.open(name, home) as source:
        details = source.info()
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
    """List the indexes under the home directory."""
    rows = []
    for name in list_indexes(home):
        with Index.open(name, home) as found:
            details = found.info()
        rows.append({"name": name, "documents": details["documents"], "model": details["manifest"]["model"],
                     "size_bytes": details["size_bytes"], "path": details["path"]})
    if json_output:
        _print_json(rows)
        return
    table = Table("name", "documents", "model", "size on disk")
    for row in rows:
        table.add_row(row["name"], f"{row['documents']:,}", row["model"], _megabytes(row["size_bytes"]))
    console.print(table)


@app.command()
def demo() -> None:
    """Index a sample support FAQ and answer questions that share no keywords with their answers."""
    console.print("Indexing examples/faq.jsonl (a support FAQ for the fictional Nimbus Notes) with the bundled model…")
    with tempfile.TemporaryDirectory(prefix="searcher-demo-") as home:
        answers = run_demo(home)
    table = Table("customer question", "matched FAQ entry", "score", "", title="Questions → best FAQ match")
    for answer in answers:
        table.add_row(answer.question, answer.matched_question, f"{answer.hit.score:.3f}", "✓" if answer.correct else "✗")
    console.print(table)
    correct = sum(answer.correct for answer in answers)
    console.print(f"{correct} of {len(answers)} questions found their FAQ entry, with no shared keywords.")


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2))


def main() -> None:
    app()
