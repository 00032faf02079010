"""Hostile inputs are refused at their line, before anything is indexed, and `--on-error skip` skips just that line."""

import io
import json

import pytest
from typer.testing import CliRunner

from searcher import Index, Record
from searcher.cli import app
from searcher.errors import SourceError
from searcher.sources import CSV_FIELD_LIMIT, read_records

runner = CliRunner()
GOOD = b'{"id": "before", "text": "a good line"}\n'
AFTER = b'{"id": "after", "text": "another good line"}\n'


def cli(home, *args, input=None):
    return runner.invoke(app, [*map(str, args), "--home", str(home)], input=input)


def assert_refused_at(tmp_path, model, source, line, message):
    """SOURCE's line LINE alone is refused with MESSAGE: by the reader, by `searcher index` (one error line and
    no index left behind) and by `searcher index --on-error skip` (the other documents indexed)."""
    location = f"{source.name}:{line}: "
    with pytest.raises(SourceError) as refused:
        list(read_records(source))
    assert location + message in str(refused.value)
    skipped: list[SourceError] = []
    kept = list(read_records(source, on_error=skipped.append))
    assert [str(error) for error in skipped] == [str(refused.value)] and len(kept) == 2

    home = tmp_path / "home"
    result = cli(home, "index", source, "--index", "new", "--model", model)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.stderr.strip().splitlines() == [f"Error: {refused.value}"]
    assert not (home / "new").exists()
    result = cli(home, "index", source, "--index", "new", "--model", model, "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "Skipped 1 malformed records; the first: " in result.stderr and location in result.stderr
    with Index.open("new", home) as index:
        assert len(index) == 2 and index.check() == []


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", '[1, {"deep": -Infinity}]'])
def test_row2_non_finite_numbers_are_refused_at_their_line(tmp_path, tiny_model, number):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(GOOD + f'{{"id": "x", "text": "t", "views": {number}}}\n'.encode() + AFTER)
    assert_refused_at(tmp_path, tiny_model, source, 2, "field 'views' holds a number that is not finite")
    filtered = cli(tmp_path / "home", "query", "t", "--index", "new", "--filter", '{"views": 1}')
    assert filtered.exit_code == 0 and "No results" in filtered.stdout, filtered.output


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("excel.csv", "\ufeffid,text,lang\n1,hello,en\n", [Record("1", "hello", {"lang": "en"})]),
        ("excel.tsv", "\ufeffid\ttext\n1\thello\n", [Record("1", "hello")]),
        ("notes.txt", "\ufefffirst\nsecond\n", [Record("notes.txt:1", "first"), Record("notes.txt:2", "second")]),
        ("docs.jsonl", '\ufeff{"id": "1", "text": "hello"}\n', [Record("1", "hello")]),
        ("folder", "\ufeff# Title\nbody", [Record("page.md", "# Title\nbody")]),
    ],
)
def test_row6_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path, monkeypatch, name, content, expected):
    if name == "folder":
        (tmp_path / name).mkdir()
        (tmp_path / name / "page.md").write_text(content, encoding="utf-8")
    else:
        (tmp_path / name).write_text(content, encoding="utf-8")
    assert list(read_records(tmp_path / name)) == expected
    if name.endswith(".jsonl"):  # a pipe from a Windows tool starts with one too
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(content.encode()), encoding="utf-8"))
        assert list(read_records("-")) == expected


@pytest.mark.parametrize(
    ("name", "line", "message"),
    [
        ("digits.jsonl", b'{"id": "x", "text": "t", "n": ' + b"7" * 5000 + b"}", "a number of more than 4300 digits"),
        ("brackets.jsonl", b'{"id": "x", "text": "t", "n": ' + b"[" * 100_000 + b"}", "nested too deeply"),
        (
            "nested.jsonl",
            b'{"id": "x", "text": "t", "n": ' + b"[" * 500 + b"]" * 500 + b"}",
            "field 'n' is nested too deeply",
        ),
        ("surrogate.jsonl", b'{"id": "x", "text": "half a pair: \\ud800"}', "field 'text' holds a lone surrogate"),
        ("surrogate_key.jsonl", b'{"id": "x", "text": "t", "\\udfff": 1}', "field '\\udfff' holds a lone surrogate"),
        ("latin1.jsonl", b'{"id": "x", "text": "caf\xe9"}', "not UTF-8 text"),
        ("latin1.csv", b"x,caf\xe9", "not UTF-8 text"),
        ("latin1.txt", b"caf\xe9", "not UTF-8 text"),
        ("wide.csv", b"x," + b"w" * (CSV_FIELD_LIMIT + 1), "field larger than field limit"),
    ],
)
def test_row8_an_unreadable_line_is_refused_at_its_line(tmp_path, tiny_model, name, line, message):
    source = tmp_path / name
    if name.endswith(".csv"):
        source.write_bytes(b"id,text\nbefore,a good line\n" + line + b"\nafter,another good line\n")
        expected_line = 3
    elif name.endswith(".txt"):
        source.write_bytes(b"a good line\n" + line + b"\nanother good line\n")
        expected_line = 2
    else:
        source.write_bytes(GOOD + line + b"\n" + AFTER)
        expected_line = 2
    assert_refused_at(tmp_path, tiny_model, source, expected_line, message)


def test_row8_a_line_of_stdin_that_is_not_utf8_is_skipped_alone(tmp_path, tiny_model):
    piped = GOOD + b'{"id": "x", "text": "caf\xe9"}\n' + AFTER
    result = cli(tmp_path, "index", "-", "--index", "piped", "--model", tiny_model, "--on-error", "skip", input=piped)
    assert result.exit_code == 0 and "the first: <stdin>:2: not UTF-8 text" in result.stderr, result.output
    assert "Indexed 2 documents" in result.stdout


def test_row8_a_csv_field_over_python_s_default_limit_is_read(tmp_path):
    (tmp_path / "long.csv").write_text("id,text\n1," + "word " * 40_000 + "\n", encoding="utf-8")
    (record,) = read_records(tmp_path / "long.csv")
    assert len(record.text) == len("word " * 40_000) - 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "x", "text": "t", "answer": {"text": "nested"}}, "text field 'answer' must be text, got dict"),
        ({"id": "x", "text": "t", "question": ["a", "list"]}, "text field 'question' must be text, got list"),
        ({"id": "x", "text": "t", "answer": True}, "text field 'answer' must be text, got bool"),
    ],
)
def test_row9_a_question_or_answer_that_is_not_text_is_refused(tmp_path, tiny_model, row, message):
    source = tmp_path / "faq.jsonl"
    source.write_bytes(GOOD + json.dumps(row).encode() + b"\n" + AFTER)
    assert_refused_at(tmp_path, tiny_model, source, 2, message)


def test_row9_a_number_as_answer_is_stored_as_text_and_shown(tmp_path, tiny_model):
    source = tmp_path / "faq.jsonl"
    source.write_text(json.dumps({"id": "n", "question": "How many?", "answer": 42}) + "\n", encoding="utf-8")
    assert next(read_records(source)).fields == {"question": "How many?", "answer": "42"}
    home = tmp_path / "home"
    assert cli(home, "index", source, "--index", "faq", "--model", tiny_model).exit_code == 0
    result = cli(home, "query", "How many?", "--index", "faq")
    assert result.exit_code == 0 and "42" in result.stdout, result.output


def test_row9_a_non_text_answer_stored_through_the_library_is_shown_as_text(tmp_path, tiny_embedder):
    with Index.create("faq", home=tmp_path, embedder=tiny_embedder) as index:
        index.add([Record("n", "How many? 42", {"question": ["How", "many"], "answer": {"count": 42}})])
    result = cli(tmp_path, "query", "How many?", "--index", "faq")
    assert result.exit_code == 0 and "count" in result.stdout, result.output
    (hit,) = json.loads(cli(tmp_path, "query", "How many?", "--index", "faq", "--json").stdout)["results"]
    assert (hit["matched"], hit["answer"]) == ('["How", "many"]', '{"count": 42}')
