"""Reading documents from files into records; every error names the file and line."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import faq
from .errors import SourceError

DEFAULT_ID_FIELDS = ("_id", "id")
# A text that starts with one of these fields, followed by others, starts with a heading: the rest is its body.
HEADING_FIELDS = ("title", faq.QUESTION)
DIRECTORY_SUFFIXES = (".txt", ".md")
FILE_FORMATS = (".jsonl", ".ndjson", ".csv", ".tsv", ".txt")
OnError = Callable[[SourceError], None] | None


@dataclass(frozen=True)
class Record:
    """One document to index: an external id, the text to embed, and metadata returned with hits."""

    id: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    phrasings: tuple[str, ...] = ()  # other wordings of the same question, each matched on its own
    heading: str = ""  # a title or FAQ question the text starts with (not stored: tuning pairs it with the body)

    @property
    def body(self) -> str:
        """The text after its heading: a document's text without its title, a FAQ entry's answer."""
        return self.text[len(self.heading) :].strip()


def read_records(
    source: str | Path,
    text_fields: Sequence[str] = (),
    id_field: str | None = None,
    on_error: Callable[[SourceError], None] | None = None,
) -> Iterator[Record]:
    """Records from a JSONL/CSV/TSV/TXT file, a directory of .txt/.md files, a BEIR directory, or "-" (stdin).

    A bad line stops the reading with a SourceError naming it, unless ON_ERROR is given: then it is
    handed the error and reading goes on. A source without a single record is an error.
    """
    found = False
    for record in _read_source(source, text_fields, id_field, on_error):
        found = True
        yield record
    if not found:
        raise SourceError(f"{'<stdin>' if str(source) == '-' else source}: no documents found")


def _read_source(
    source: str | Path, text_fields: Sequence[str], id_field: str | None, on_error: OnError
) -> Iterator[Record]:
    if str(source) == "-":
        yield from _read_jsonl(sys.stdin, "<stdin>", text_fields, id_field, on_error)
        return
    path = Path(source)
    if path.is_dir():
        corpus = path / "corpus.jsonl"
        if corpus.is_file():
            yield from _read_source(corpus, text_fields, id_field, on_error)
        else:
            yield from _read_directory(path)
        return
    if path.exists():
        check_file_format(path, FILE_FORMATS)
    with _open_text(path) as handle:
        yield from read_stream(handle, str(path), text_fields, id_field, on_error)


def check_file_format(path: str | Path, formats: Sequence[str]) -> None:
    """Refuse a file whose suffix is not one of FORMATS, naming them."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise SourceError(
            f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(formats)} or a directory"
        )


def read_stream(
    handle: TextIO, name: str, text_fields: Sequence[str] = (), id_field: str | None = None, on_error: OnError = None
) -> Iterator[Record]:
    """Records from an open JSONL/CSV/TSV/TXT text stream, parsed by NAME's suffix; errors name NAME and the line."""
    suffix = Path(name).suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            yield from _read_jsonl(handle, name, text_fields, id_field, on_error)
        elif suffix in (".csv", ".tsv"):
            yield from _read_table(handle, name, "\t" if suffix == ".tsv" else ",", text_fields, id_field, on_error)
        else:
            for line_number, line in enumerate(handle, start=1):
                yield Record(id=f"{Path(name).name}:{line_number}", text=line.strip())
    except UnicodeDecodeError:
        raise SourceError(f"{name}: not UTF-8 text") from None


def _open_text(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8", newline="")
    except FileNotFoundError:
        raise SourceError(f"no such file or directory: {path}") from None
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error.strerror}") from None


def read_rows(
    rows: Iterable[dict[str, Any]],
    name: str,
    text_fields: Sequence[str] = (),
    id_field: str | None = None,
    on_error: OnError = None,
) -> Iterator[Record]:
    """Records from rows already parsed (a Parquet file's, say); errors name NAME and the row number."""
    for number, row in enumerate(rows, start=1):
        yield from _guarded(
            on_error, make_record, row, f"{name}: row {number}", f"{Path(name).name}:{number}", text_fields, id_field
        )


def _read_jsonl(
    handle: Iterable[str], name: str, text_fields: Sequence[str], id_field: str | None, on_error: OnError
) -> Iterator[Record]:
    for line_number, line in enumerate(handle, start=1):
        if line.strip():
            yield from _guarded(
                on_error,
                _jsonl_record,
                line,
                f"{name}:{line_number}",
                f"{Path(name).name}:{line_number}",
                text_fields,
                id_field,
            )


def _jsonl_record(
    line: str, location: str, fallback_id: str, text_fields: Sequence[str], id_field: str | None
) -> Record:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise SourceError(f"{location}: invalid JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(row, dict):
        raise SourceError(f"{location}: expected a JSON object, got {type(row).__name__}")
    return make_record(row, location, fallback_id, text_fields, id_field)


def _read_table(
    handle: TextIO, name: str, delimiter: str, text_fields: Sequence[str], id_field: str | None, on_error: OnError
) -> Iterator[Record]:
    reader = csv.DictReader(handle, delimiter=delimiter)
    if not reader.fieldnames:
        raise SourceError(f"{name}: empty file, expected a header line")
    for row in reader:
        yield from _guarded(
            on_error,
            _table_record,
            row,
            f"{name}:{reader.line_num}",
            f"{Path(name).name}:{reader.line_num}",
            len(reader.fieldnames),
            text_fields,
            id_field,
        )


def _table_record(
    row: dict, location: str, fallback_id: str, columns: int, text_fields: Sequence[str], id_field: str | None
) -> Record:
    if None in row:
        raise SourceError(f"{location}: more values than the header's {columns} columns")
    return make_record(row, location, fallback_id, text_fields, id_field)


def _guarded(on_error: OnError, build: Callable[..., Record], *arguments: Any) -> Iterator[Record]:
    """The record BUILD makes, or none when it fails and ON_ERROR takes the error instead of stopping."""
    try:
        yield build(*arguments)
    except SourceError as error:
        if on_error is None:
            raise
        on_error(error)


def _read_directory(directory: Path) -> Iterator[Record]:
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in DIRECTORY_SUFFIXES and p.is_file())
    if not files:
        raise SourceError(f"{directory}: no {' or '.join(DIRECTORY_SUFFIXES)} files in this directory")
    for path in files:
        with _open_text(path) as handle:
            try:
                text = handle.read()
            except UnicodeDecodeError:
                raise SourceError(f"{path}: not UTF-8 text") from None
        yield Record(id=path.relative_to(directory).as_posix(), text=text.strip())


def make_record(
    row: dict[str, Any], location: str, fallback_id: str, text_fields: Sequence[str] = (), id_field: str | None = None
) -> Record:
    """A Record from one row: its id field, its text fields joined, every other field as metadata.

    A FAQ entry (question, answer, optional list of alternative phrasings) keeps question and answer as
    fields too (see `faq`).
    """
    id_key = _id_key(row, location, id_field)
    text_keys = _text_keys(row, location, text_fields)
    parts = [_text_value(row[key], location, key) for key in text_keys]
    record_id = fallback_id if id_key is None else _id_value(row[id_key], location, id_key)
    text = " ".join(part for part in parts if part)
    heading = parts[0] if text_keys[0] in HEADING_FIELDS else ""
    if not text_fields and faq.is_entry(text_keys):
        return Record(
            record_id,
            text,
            faq.entry_fields(row, id_key),
            _alternatives(row.get(faq.ALTERNATIVES), location),
            heading,
        )
    fields = {key: value for key, value in row.items() if key != id_key and key not in text_keys}
    return Record(id=record_id, text=text, fields=fields, heading=heading)


def _alternatives(value: Any, location: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SourceError(f"{location}: {faq.ALTERNATIVES!r} must be a list of strings")
    return tuple(dict.fromkeys(item.strip() for item in value if item.strip()))


def _id_key(row: dict[str, Any], location: str, id_field: str | None) -> str | None:
    if id_field is None:
        return next((key for key in DEFAULT_ID_FIELDS if key in row), None)
    if id_field not in row:
        raise SourceError(f"{location}: no id field {id_field!r} (fields: {', '.join(row) or 'none'})")
    return id_field


def _id_value(value: Any, location: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SourceError(f"{location}: id field {key!r} must be a string or an integer, got {json.dumps(value)}")
    if isinstance(value, str) and not value.strip():
        raise SourceError(f"{location}: id field {key!r} is empty")
    return str(value)


def _text_keys(row: dict[str, Any], location: str, text_fields: Sequence[str]) -> list[str]:
    if text_fields:
        keys = [key for key in text_fields if key in row]
        if not keys:
            raise SourceError(
                f"{location}: none of the text fields {', '.join(text_fields)} (fields: {', '.join(row)})"
            )
        return keys
    for candidate in (("title", "text"), ("text",), *faq.TEXT_FIELD_CHOICES):
        if all(key in row for key in candidate):
            return list(candidate)
    raise SourceError(
        f"{location}: no text, title+text or question/answer field; name one with --text-field "
        f"(fields: {', '.join(row) or 'none'})"
    )


def _text_value(value: Any, location: str, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise SourceError(f"{location}: text field {key!r} must be text, got {type(value).__name__}")
