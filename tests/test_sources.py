import io
import json

import pytest

from searcher.errors import SourceError
from searcher.sources import Record, read_records


def write_jsonl(path, *rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_beir_title_and_text_are_joined(tmp_path):
    source = write_jsonl(
        tmp_path / "c.jsonl",
        {"_id": "d1", "title": "Strikethrough", "text": "Use ~~tildes~~.", "metadata": {"thread": 0}},
    )
    records = list(read_records(source))
    assert records == [
        Record("d1", "Strikethrough Use ~~tildes~~.", {"metadata": {"thread": 0}}, heading="Strikethrough")
    ]
    assert records[0].body == "Use ~~tildes~~."


def test_empty_title_is_not_joined(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", {"_id": "d1", "title": "", "text": "just text"})
    record = next(read_records(source))
    assert record.text == record.body == "just text" and record.heading == ""


def test_faq_question_and_answer_are_joined_and_kept_as_fields(tmp_path):
    source = write_jsonl(tmp_path / "faq.jsonl", {"id": 7, "question": "Q?", "answer": "A.", "category": "billing"})
    assert list(read_records(source)) == [
        Record("7", "Q? A.", {"question": "Q?", "answer": "A.", "category": "billing"}, heading="Q?")
    ]


def test_faq_alternatives_become_phrasings(tmp_path):
    row = {
        "id": "pw",
        "question": "Reset password?",
        "answer": "Use the link.",
        "alternatives": ["Forgot login", " ", "Forgot login", "Locked out"],
    }
    (record,) = read_records(write_jsonl(tmp_path / "faq.jsonl", row))
    assert record.phrasings == ("Forgot login", "Locked out")
    assert "alternatives" not in record.fields


def test_faq_alternatives_must_be_a_list_of_strings(tmp_path):
    source = write_jsonl(tmp_path / "faq.jsonl", {"question": "Q?", "answer": "A.", "alternatives": "not a list"})
    with pytest.raises(SourceError, match="faq.jsonl:1: 'alternatives' must be a list of strings"):
        list(read_records(source))


def test_records_without_ids_get_stable_line_ids(tmp_path):
    source = write_jsonl(tmp_path / "notes.jsonl", {"text": "one"}, {"text": "two"})
    assert [r.id for r in read_records(source)] == ["notes.jsonl:1", "notes.jsonl:2"]


def test_chosen_text_and_id_fields(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", {"key": "k1", "body": "hello", "summary": "hi", "text": "ignored"})
    (record,) = read_records(source, text_fields=["summary", "body"], id_field="key")
    assert record == Record("k1", "hi hello", {"text": "ignored"})


def test_csv_and_tsv_with_header(tmp_path):
    (tmp_path / "d.csv").write_text('id,text,lang\n1,"hello, world",en\n2,bonjour,fr\n', encoding="utf-8")
    (tmp_path / "d.tsv").write_text("id\ttext\n1\thello\tworld\n", encoding="utf-8")
    assert list(read_records(tmp_path / "d.csv")) == [
        Record("1", "hello, world", {"lang": "en"}),
        Record("2", "bonjour", {"lang": "fr"}),
    ]
    with pytest.raises(SourceError, match=r"d.tsv:2: more values than the header's 2 columns"):
        list(read_records(tmp_path / "d.tsv"))


def test_txt_is_one_document_per_line(tmp_path):
    (tmp_path / "lines.txt").write_text("first\nsecond\n", encoding="utf-8")
    assert list(read_records(tmp_path / "lines.txt")) == [
        Record("lines.txt:1", "first"),
        Record("lines.txt:2", "second"),
    ]


def test_directory_is_one_document_per_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text("# Title\nbody", encoding="utf-8")
    (tmp_path / "sub" / "b.txt").write_text("nested", encoding="utf-8")
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    assert list(read_records(tmp_path)) == [Record("a.md", "# Title\nbody"), Record("sub/b.txt", "nested")]


def test_beir_directory_uses_its_corpus(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", {"_id": "x", "title": "T", "text": "body"})
    write_jsonl(tmp_path / "queries.jsonl", {"_id": "q", "text": "not a document"})
    assert [r.id for r in read_records(tmp_path)] == ["x"]


def test_stdin_is_jsonl(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"id": "s", "text": "from a pipe"}\n'))
    assert list(read_records("-")) == [Record("s", "from a pipe")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n{"text": broken}\n', r"c.jsonl:2: invalid JSON"),
        ('["a", "list"]\n', r"c.jsonl:1: expected a JSON object, got list"),
        ('{"body": "x"}\n', r"c.jsonl:1: no text.*--text-field \(fields: body\)"),
        ('{"id": [1], "text": "x"}\n', r"c.jsonl:1: id field 'id' must be a string or an integer"),
        ('{"id": "", "text": "x"}\n', r"c.jsonl:1: id field 'id' is empty"),
        ('{"id": "a", "text": {"nested": 1}}\n', r"c.jsonl:1: text field 'text' must be text"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    (tmp_path / "c.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(SourceError, match=message):
        list(read_records(tmp_path / "c.jsonl"))


def test_missing_id_field_is_named(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", {"text": "x"})
    with pytest.raises(SourceError, match="no id field 'key'"):
        list(read_records(source, id_field="key"))


def test_invalid_utf8_is_reported(tmp_path):
    (tmp_path / "c.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(SourceError, match="not UTF-8"):
        list(read_records(tmp_path / "c.jsonl"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "no such file or directory"),
        ("data.pdf", b"%PDF", "unsupported file type .pdf"),
        ("empty.csv", b"", "empty file, expected a header line"),
    ],
)
def test_unreadable_sources(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(SourceError, match=message):
        list(read_records(tmp_path / name))


def test_directory_without_text_files(tmp_path):
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(SourceError, match="no .txt or .md files"):
        list(read_records(tmp_path))


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_source_without_documents_is_an_error(tmp_path, content):
    (tmp_path / "empty.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(SourceError, match="empty.jsonl: no documents found"):
        list(read_records(tmp_path / "empty.jsonl"))
