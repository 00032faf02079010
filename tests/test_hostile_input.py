"""Every hostile input ends in one clear line, a non-zero exit (or a counted skip) and no lost documents."""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

import searcher.store
from searcher import Index
from searcher.cli import app
from searcher.paths import VECTORS_FILE

runner = CliRunner()


@pytest.fixture
def home(tmp_path, tiny_model):
    """A home holding index `kept` with three documents that no failure may lose."""
    source = tmp_path / "kept.jsonl"
    source.write_text("".join(json.dumps({"id": f"d{i}", "text": f"kept document {i}"}) + "\n" for i in range(3)))
    result = runner.invoke(
        app, ["index", str(source), "--index", "kept", "--model", str(tiny_model), "--home", str(tmp_path / "home")]
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "home"


def cli(home, *args, input=None):
    return runner.invoke(app, [*map(str, args), "--home", str(home)], input=input)


def assert_one_line_error(result, message, code=1):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines


def assert_nothing_lost(home):
    with Index.open("kept", home) as index:
        assert len(index) == 3 and index.check(repair=True) == []


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", b'{"id": "x", "text": "ok"}\n{"id": \n', "bad.jsonl:2: invalid JSON"),
        ("latin1.jsonl", b'{"id": "x", "text": "caf\xe9"}\n', "latin1.jsonl:1: not UTF-8 text"),
        ("noheader.csv", b"", "noheader.csv: empty file, expected a header line"),
        ("notext.csv", b"id,title_only\n1,hello\n", "notext.csv:2: no text, title+text or question/answer field"),
        ("empty.jsonl", b"", "empty.jsonl: no documents found"),
        ("blank.jsonl", b'{"id": "x", "text": "   "}\n', ""),
        (
            "badid.jsonl",
            b'{"id": {"a": 1}, "text": "x"}\n',
            "badid.jsonl:1: id field 'id' must be a string or an integer",
        ),
        ("binary.jsonl", bytes(range(256)) * 4, "binary.jsonl"),
        ("image.png", b"\x89PNG\r\n\x1a\n", "unsupported file type .png"),
    ],
)
def test_bad_source_files(home, tmp_path, tiny_model, name, content, message):
    (tmp_path / name).write_bytes(content)
    result = cli(home, "index", tmp_path / name, "--index", "kept")
    if name == "blank.jsonl":  # whitespace-only text is skipped and counted, not an error
        assert result.exit_code == 0 and "1 empty skipped" in result.stdout
    else:
        assert_one_line_error(result, message)
    assert_nothing_lost(home)


def test_missing_and_unreadable_paths(home, tmp_path):
    assert_one_line_error(cli(home, "index", tmp_path / "absent.jsonl", "--index", "kept"), "no such file or directory")
    (tmp_path / "nothing").mkdir()
    assert_one_line_error(cli(home, "index", tmp_path / "nothing", "--index", "kept"), "no .txt or .md files")
    assert_nothing_lost(home)


def test_duplicate_ids_keep_the_last_and_are_reported(home, tmp_path):
    (tmp_path / "dupes.jsonl").write_text('{"id": "d0", "text": "first"}\n{"id": "d0", "text": "kept document 0"}\n')
    result = cli(home, "index", tmp_path / "dupes.jsonl", "--index", "kept")
    assert result.exit_code == 0 and "1 repeated ids (the last one kept)" in result.stdout
    assert "0 new, 0 updated, 1 unchanged" in result.stdout
    assert_nothing_lost(home)


def test_a_5_mb_document_is_truncated_with_a_count(home, tmp_path, tiny_model):
    (tmp_path / "huge.jsonl").write_text(json.dumps({"id": "huge", "text": "word " * 1_000_000}) + "\n")
    result = cli(home, "index", tmp_path / "huge.jsonl", "--index", "big", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    assert "1 truncated (a text cut to 128 tokens, or past 1,000 passages)" in result.stdout


def test_a_directory_that_is_not_an_index(home):
    (home / "stranger").mkdir()
    (home / "stranger" / "notes.txt").write_text("hello")
    assert_one_line_error(cli(home, "query", "x", "--index", "stranger"), "no index named 'stranger'")


def test_corrupted_database(home):
    (home / "kept" / "docs.sqlite").write_bytes(b"this is not sqlite" * 100)
    for suffix in ("-wal", "-shm"):
        (home / "kept" / f"docs.sqlite{suffix}").unlink(missing_ok=True)
    assert_one_line_error(cli(home, "query", "x", "--index", "kept"), "not a readable index database")


def test_corrupted_vector_file_is_rebuilt_with_a_warning(home):
    (home / "kept" / VECTORS_FILE).write_bytes(b"garbage")
    result = cli(home, "query", "kept document 1", "--index", "kept", "--json")
    assert result.exit_code == 0 and "Warning: the vector file of index kept" in result.stderr
    assert json.loads(result.stdout)["results"][0]["id"] == "d1"
    assert_nothing_lost(home)


def test_an_index_from_a_newer_searcher(home):
    with sqlite3.connect(home / "kept" / "docs.sqlite") as connection:
        connection.execute("UPDATE manifest SET value = '99' WHERE key = 'format'")
    assert_one_line_error(
        cli(home, "query", "x", "--index", "kept"), "newer format (99; this searcher reads 2): upgrade searcher"
    )


def test_other_model_or_pooling_is_refused(home, tmp_path, bundled_dir):
    source = tmp_path / "more.jsonl"
    source.write_text('{"id": "n", "text": "new"}\n')
    assert_one_line_error(
        cli(home, "index", source, "--index", "kept", "--pooling", "cls"),
        "built with pooling 'mean', not 'cls'",
        code=2,
    )
    assert_one_line_error(
        cli(home, "index", source, "--index", "kept", "--model", bundled_dir), "built with model", code=2
    )
    assert_nothing_lost(home)


@pytest.mark.parametrize(("k", "message"), [("0", "Invalid value for '-k'"), ("-3", "Invalid value for '-k'")])
def test_bad_k(home, k, message):
    assert_one_line_error(cli(home, "query", "x", "--index", "kept", "-k", k), message, code=2)


def test_k_larger_than_the_index_and_an_empty_index(home, tiny_model):
    result = cli(home, "query", "kept", "--index", "kept", "-k", "1000", "--json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)["results"]) == 3
    with Index.create("empty", home=home, embedder=Index.open("kept", home).embedder):
        pass
    empty = cli(home, "query", "anything", "--index", "empty")
    assert empty.exit_code == 0 and "No results" in empty.stdout


def test_a_query_of_100k_characters(home):
    result = cli(home, "query", "kept document " * 7_200, "--index", "kept", "--json", "-k", "1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["id"].startswith("d")


def test_disk_full_during_a_write(home, tmp_path, monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("searcher.vectors.os.replace", full)
    monkeypatch.setattr("searcher.vectorfile.COMPACTION_MINIMUM", 0)  # this write rewrites the vector file
    (tmp_path / "new.jsonl").write_text('{"id": "n1", "text": "a new document"}\n')
    assert_one_line_error(cli(home, "index", tmp_path / "new.jsonl", "--index", "kept"), "No space left on device")
    monkeypatch.undo()
    with Index.open("kept", home) as index:  # the committed rows survive, and the old file with the logged writes
        assert len(index) == 4 and index.check() == []
        assert index.search("a new document", k=1)[0].id == "n1"
        assert index.check(repair=True) == []
    assert not list((home / "kept").glob(".*.tmp"))


def test_database_full_during_a_write(home, tmp_path, monkeypatch):
    connect = searcher.store._connect

    def nearly_full(path):
        db = connect(path)
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0] + 60}")
        return db

    monkeypatch.setattr("searcher.store._connect", nearly_full)
    rows = (json.dumps({"id": f"n{i}", "text": f"new document {i} " + "words " * 200}) for i in range(200))
    (tmp_path / "new.jsonl").write_text("\n".join(rows))
    assert_one_line_error(cli(home, "index", tmp_path / "new.jsonl", "--index", "kept"), "database or disk is full")
    monkeypatch.undo()
    with Index.open("kept", home) as index:  # whole batches committed before the disk filled, each document whole
        assert all(problem.startswith("vectors.faiss") for problem in index.check())
        assert 3 <= len(index) < 203
