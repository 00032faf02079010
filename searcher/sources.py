"""Reading documents from files into records; every error names the file and line."""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from . import faq
from .errors import SourceError

DEFAULT_ID_FIELDS = ("_id", "id")
# A text that starts with one of these fields, followed by others, starts with a heading: the rest is its body.
HEADING_FIELDS = ("title", faq.QUESTION)
DIRECTORY_SUFFIXES = (".txt", ".md")
FILE_FORMATS = (".jsonl", ".ndjson", ".csv", ".tsv", ".txt")
OnError = Callable[[SourceError], None] | None
# What Excel ("CSV UTF-8") and Notepad write before the first line; it is no part of the first field or document.
BOM = "\ufeff"
# Python's default (131,072 characters) refuses long documents. A bound stays, so that an unbalanced quote fails at a
# line instead of reading the rest of a large file into one field (64 MiB at most: csv keeps 4 bytes a character).
CSV_FIELD_LIMIT = 16 * 1024 * 1024
# No metadata needs more, and near 1,000 levels the JSON encoder and SQLite's JSON functions, which store and
# filter fields, give up: refused while reading, a deeper field cannot break an index half-written.
MAX_NESTING = 100
# Half of a UTF-16 pair: what bytes that are not UTF-8 decode to (errors="surrogateescape") and what a JSON escape
# such as "\ud800" reads as. Neither can be encoded for SQLite or the tokenizer.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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
        # Its bytes, decoded a line at a time, so that a line that is not UTF-8 is that line's error alone.
        lines = _lines(getattr(sys.stdin, "buffer", sys.stdin))
        yield from _read_jsonl(lines, "<stdin>", text_fields, id_field, on_error)
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
    handle: TextIO | BinaryIO,
    name: str,
    text_fields: Sequence[str] = (),
    id_field: str | None = None,
    on_error: OnError = None,
) -> Iterator[Record]:
    """Records from an open JSONL/CSV/TSV/TXT stream of text or UTF-8 bytes, parsed by NAME's suffix; errors name
    NAME and the line."""
    suffix = Path(name).suffix.lower()
    lines = _lines(handle)
    try:
        if suffix in (".jsonl", ".ndjson"):
            yield from _read_jsonl(lines, name, text_fields, id_field, on_error)
        elif suffix in (".csv", ".tsv"):
            yield from _read_table(lines, name, "\t" if suffix == ".tsv" else ",", text_fields, id_field, on_error)
        else:
            for line_number, line in enumerate(lines, start=1):
                yield from _guarded(
                    on_error, _line_record, line, f"{name}:{line_number}", f"{Path(name).name}:{line_number}"
                )
    except UnicodeDecodeError:  # a text stream that decodes strictly cannot tell which line
        raise SourceError(f"{name}: not UTF-8 text") from None


def _lines(handle: Iterable[str | bytes]) -> Iterator[str]:
    """HANDLE's lines as text, without a byte-order mark; bytes that are not UTF-8 become lone surrogates, for the
    reader to refuse their line alone."""
    for number, line in enumerate(handle):
        text = line.decode("utf-8", "surrogateescape") if isinstance(line, bytes) else line
        yield text.removeprefix(BOM) if number == 0 else text


def _check_utf8(text: str, location: str) -> None:
    """Refuse TEXT decoded from bytes that were not UTF-8 (see `_lines`)."""
    if LONE_SURROGATE.search(text):
        raise SourceError(f"{location}: not UTF-8 text")


def _line_record(line: str, location: str, fallback_id: str) -> Record:
    _check_utf8(line, location)
    return Record(id=fallback_id, text=line.strip())


def _open_text(path: Path) -> TextIO:
    try:
        # Bytes that are not UTF-8 are kept as lone surrogates, so that they are refused at their line, not read.
        return path.open(encoding="utf-8", errors="surrogateescape", newline="")
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
    return make_record(json_object(line, location), location, fallback_id, text_fields, id_field)


def json_object(line: str, location: str) -> dict[str, Any]:
    """The JSON object on one LINE of a JSONL file; anything else is a SourceError naming LOCATION."""
    _check_utf8(line, location)
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise SourceError(f"{location}: invalid JSON: {error.msg} (column {error.colno})") from None
    except ValueError:  # int() refuses longer numbers, which take it quadratic time
        raise SourceError(f"{location}: a number of more than {sys.get_int_max_str_digits()} digits") from None
    except RecursionError:
        raise SourceError(f"{location}: nested too deeply (more than {MAX_NESTING} levels)") from None
    if not isinstance(row, dict):
        raise SourceError(f"{location}: expected a JSON object, got {type(row).__name__}")
    return row


def read_json_objects(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(FILE:LINE, object) for each non-blank line of a JSONL file, read as documents' lines are."""
    with _open_text(Path(path)) as handle:
        for number, line in enumerate(_lines(handle), start=1):
            if line.strip():
                location = f"{path}:{number}"
                yield location, json_object(line, location)


def _read_table(
    lines: Iterable[str],
    name: str,
    delimiter: str,
    text_fields: Sequence[str],
    id_field: str | None,
    on_error: OnError,
) -> Iterator[Record]:
    # The limit is the whole process's: raising it lets other readers take longer fields, and nothing else.
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(lines, delimiter=delimiter)
    try:
        header = reader.fieldnames
    except csv.Error as error:
        raise SourceError(f"{name}:{reader.reader.line_num}: {error}") from None
    if not header:
        raise SourceError(f"{name}: empty file, expected a header line")
    _check_utf8("".join(header), f"{name}:{reader.reader.line_num}")
    for line_number, row in _table_rows(reader):
        yield from _guarded(
            on_error,
            _table_record,
            row,
            f"{name}:{line_number}",
            f"{Path(name).name}:{line_number}",
            len(header),
            text_fields,
            id_field,
        )


def _table_rows(reader: csv.DictReader) -> Iterator[tuple[int, dict | csv.Error]]:
    """Each row with the line it ends on, or the error the csv module gave up on a row with: it reads on at the
    next line."""
    while True:
        try:
            row: dict | csv.Error = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            row = error
        yield reader.reader.line_num, row


def _table_record(
    row: dict | csv.Error,
    location: str,
    fallback_id: str,
    columns: int,
    text_fields: Sequence[str],
    id_field: str | None,
) -> Record:
    if isinstance(row, csv.Error):
        raise SourceError(f"{location}: {row}")
    if None in row:
        raise SourceError(f"{location}: more values than the header's {columns} columns")
    for value in row.values():
        _check_utf8(value or "", location)
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
            text = handle.read().removeprefix(BOM)
        _check_utf8(text, str(path))
        yield Record(id=path.relative_to(directory).as_posix(), text=text.strip())


def make_record(
    row: dict[str, Any], location: str, fallback_id: str, text_fields: Sequence[str] = (), id_field: str | None = None
) -> Record:
    """A Record from one row: its id field, its text fields joined, every other field as metadata.

    A FAQ entry (question, answer, optional list of alternative phrasings) keeps question and answer as
    fields too (see `faq`).
    """
    for key, value in row.items():
        _check_storable(key, location, key)
        _check_storable(value, location, key)
    id_key = _id_key(row, location, id_field)
    text_keys = _text_keys(row, location, text_fields)
    parts = [_text_value(row[key], location, key) for key in text_keys]
    record_id = fallback_id if id_key is None else _id_value(row[id_key], location, id_key)
    text = " ".join(part for part in parts if part)
    heading = parts[0] if text_keys[0] in HEADING_FIELDS else ""
    if not text_fields and faq.is_entry(text_keys):
        fields = faq.entry_fields(row, id_key)
        phrasings = _alternatives(row.get(faq.ALTERNATIVES), location)
    else:
        fields = {key: value for key, value in row.items() if key != id_key and key not in text_keys}
        phrasings = ()
    return Record(record_id, text, _shown_as_text(fields, location), phrasings, heading)


def _check_storable(value: Any, location: str, key: str, depth: int = 0) -> None:
    """Refuse what an index cannot store as JSON in UTF-8: a number that is not finite (Python's json reads NaN and
    Infinity), a lone surrogate, nesting deeper than MAX_NESTING."""
    if isinstance(value, str) and LONE_SURROGATE.search(value):
        raise SourceError(
            f"{location}: field {key!r} holds a lone surrogate (half of a UTF-16 pair), which is not text"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise SourceError(f"{location}: field {key!r} holds a number that is not finite ({value})")
    if isinstance(value, (dict, list)):
        if depth == MAX_NESTING:
            raise SourceError(f"{location}: field {key!r} is nested too deeply (more than {MAX_NESTING} levels)")
        for item in [*value, *value.values()] if isinstance(value, dict) else value:
            _check_storable(item, location, key, depth + 1)


def _shown_as_text(fields: dict[str, Any], location: str) -> dict[str, Any]:
    """FIELDS with the question and answer that hits show as text; a number becomes text, another value is refused."""
    for key in faq.SHOWN_FIELDS:
        value = fields.get(key)
        if value is not None and not isinstance(value, str):
            fields[key] = _text_value(value, location, key)
    return fields


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
