"""Property tests: parsing any input, and any sequence of adds, upserts and deletes against a plain dict."""

import csv
import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from searcher import Index, Record
from searcher.errors import SourceError
from searcher.sources import BOM, MAX_NESTING, read_records

ids = st.one_of(st.text(min_size=1).filter(str.strip), st.integers())
texts = st.text()
field_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
extra_fields = st.dictionaries(st.sampled_from(["category", "lang", "views"]), field_values, max_size=2)
rows = st.builds(lambda id_, text, extra: {"id": id_, "text": text, **extra}, ids, texts, extra_fields)
# JSON that Python's json reads (or gives up on with another exception than a JSONDecodeError) but no index can
# store: numbers that are not finite, past int()'s digit limit, escaped halves of a surrogate pair, deep nesting.
hostile_values = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", '"\\ud800"', '["a \\udfff b"]', "[" * 100_000]),
    st.integers(4301, 6000).map(lambda digits: "9" * digits),
    st.integers(MAX_NESTING + 1, 1200).map(lambda depth: "[" * depth + "]" * depth),
)
hostile_rows = st.builds(
    lambda id_, value: f'{{"id": {json.dumps(id_)}, "text": "t", "x": {value}}}', ids, hostile_values
)
text_lines = st.text().filter(lambda line: "\n" not in line and "\r" not in line and not line.startswith(BOM))
FILE_LINE = re.compile(r"docs\.\w+:(\d+): ")


def read_back(content: bytes, name: str, **options):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(content)
        return list(read_records(path, **options))


@given(st.lists(rows, min_size=1, max_size=20))
def test_jsonl_rows_read_back_as_written(rows):
    content = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    expected = [
        Record(str(row["id"]), row["text"].strip(), {k: v for k, v in row.items() if k not in ("id", "text")})
        for row in rows
    ]
    assert read_back(content, "docs.jsonl") == expected


@given(
    st.lists(st.tuples(ids, texts), min_size=1, max_size=20), st.sampled_from([("docs.csv", ","), ("docs.tsv", "\t")])
)
def test_table_rows_read_back_as_written(rows, format_):
    name, delimiter = format_
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(["id", "text"])
            writer.writerows(rows)
        records = list(read_records(path))
    assert [(record.id, record.text) for record in records] == [(str(id_), text.strip()) for id_, text in rows]


@given(
    st.lists(
        st.one_of(
            rows.map(lambda row: (json.dumps(row), True)),
            hostile_rows.map(lambda line: (line, False)),
            text_lines.map(lambda line: (line, _is_good_row(line))),
        ),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(["", BOM]),
)
def test_skipping_bad_lines_keeps_every_good_one(lines, bom):
    skipped: list[SourceError] = []
    content = (bom + "".join(line + "\n" for line, _ in lines)).encode()
    try:
        records = read_back(content, "docs.jsonl", on_error=skipped.append)
    except SourceError as error:  # every line was bad or blank
        assert "no documents found" in str(error)
        records = []
    assert len(records) == len([line for line, good in lines if line.strip() and good])
    bad = [number for number, (line, good) in enumerate(lines, start=1) if line.strip() and not good]
    assert [int(FILE_LINE.search(str(error))[1]) for error in skipped] == bad


def _is_good_row(line: str) -> bool:
    try:
        row = json.loads(line)
        json.dumps(row, ensure_ascii=False, allow_nan=False).encode()  # as an index stores it
    except (ValueError, RecursionError):
        return False
    return (
        isinstance(row, dict)
        and "text" in row
        and isinstance(row["text"], (str, int, float, type(None)))
        and not isinstance(row["text"], bool)
        and (row.get("id") is None or _good_id(row["id"]))
    )


def _good_id(value) -> bool:
    return not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, str) and bool(value.strip())))


@settings(deadline=None)
@given(
    st.lists(
        st.one_of(
            rows.map(json.dumps).map(str.encode),
            hostile_rows.map(str.encode),
            text_lines.map(lambda line: line.encode()),
            st.binary(max_size=50).filter(lambda line: b"\n" not in line and b"\r" not in line),
        ),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(["docs.jsonl", "docs.csv", "docs.tsv", "docs.txt"]),
)
def test_any_input_parses_into_storable_records_or_fails_naming_its_line(lines, name):
    content = b"".join(line + b"\n" for line in lines)
    outcomes = [_outcome(content, name, skip) for skip in (False, True)]
    if not content.startswith(BOM.encode()):
        assert _outcome(BOM.encode() + content, name, skip=True) == outcomes[1]
    for records, errors in outcomes:
        for record in records:  # as an index stores them: UTF-8 text and fields as strict JSON
            (record.id + record.text + "".join(record.phrasings)).encode()
            json.dumps(record.fields, ensure_ascii=False, allow_nan=False).encode()
        for error in errors:
            found = FILE_LINE.search(error)
            assert (found and 1 <= int(found[1]) <= len(lines)) or error.endswith(WHOLE_FILE_ERRORS), error


WHOLE_FILE_ERRORS = ("no documents found", "empty file, expected a header line")


def _outcome(content: bytes, name: str, skip: bool) -> tuple[list[Record], list[str]]:
    """The records read and the messages of the errors met, skipping bad lines or stopping at the first."""
    errors: list[SourceError] = []
    try:
        records = read_back(content, name, on_error=errors.append if skip else None)
    except SourceError as error:
        records = []
        errors.append(error)
    return records, [str(error)[str(error).index(name) :] for error in errors]  # without the temporary directory


# Index operations: a few ids so that sequences collide, texts that are sometimes blank (skipped).
doc_ids = st.sampled_from(["a", "b", "c", "d", "e", "f"])
doc_texts = st.one_of(st.sampled_from(["", "  "]), st.text(alphabet="abcdefgh xyz", min_size=1, max_size=30))
records = st.builds(Record, doc_ids, doc_texts, st.dictionaries(st.just("tag"), st.integers(0, 2), max_size=1))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(records, max_size=6)),
        st.tuples(st.just("delete"), st.lists(doc_ids, max_size=3)),
    ),
    min_size=1,
    max_size=6,
)


def apply_to_model(model: dict, operation) -> dict:
    """The expected effect of one operation on {id: (text, fields)}, and the counts an add reports."""
    kind, argument = operation
    if kind == "delete":
        return {"deleted": sorted({id_ for id_ in argument if model.pop(id_, None) is not None})}
    latest = {record.id: record for record in argument}
    counts = {"added": 0, "updated": 0, "unchanged": 0, "skipped_empty": 0, "duplicates": len(argument) - len(latest)}
    for record in latest.values():
        if not record.text.strip():
            counts["skipped_empty"] += 1
            continue
        before = model.get(record.id)
        counts["added" if before is None else "unchanged" if before == (record.text, record.fields) else "updated"] += 1
        model[record.id] = (record.text, record.fields)
    return counts


def contents(index: Index) -> dict:
    return {document.id: (document.text, document.fields) for document in index.documents()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_any_sequence_of_writes_matches_a_dict(tiny_embedder, operations):
    model: dict = {}
    with tempfile.TemporaryDirectory() as directory:
        with Index.create(Path(directory) / "idx", embedder=tiny_embedder) as index:
            for operation in operations:
                expected = apply_to_model(model, operation)
                if operation[0] == "delete":
                    assert {"deleted": sorted(index.delete(operation[1]))} == expected
                else:
                    report = index.add(operation[1])
                    assert {key: getattr(report, key) for key in expected} == expected
                assert contents(index) == model
                assert len(index) == len(model) and index.check() == []
        with Index.open(Path(directory) / "idx") as reopened:
            assert contents(reopened) == model and reopened.check() == []
            for id_, (text, _) in model.items():
                assert id_ in {hit.id for hit in reopened.search(text, k=len(model))}
