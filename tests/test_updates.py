"""Updating an index safely: unchanged skips, deletes, drop, check/repair and the writer lock."""

import json
import sqlite3

import pytest
from filelock import FileLock
from typer.testing import CliRunner

from searcher import Index, Record
from searcher.cli import app
from searcher.errors import IndexLockedError, IndexNotFoundError
from searcher.paths import LOCK_FILE, VECTORS_FILE, drop_index

RECORDS = [Record(str(i), f"document number {i} about topic {i % 7}", {"n": i}) for i in range(40)]
runner = CliRunner()


@pytest.fixture
def index(tiny_index):
    return tiny_index(RECORDS)


def test_unchanged_documents_are_skipped_and_counted(index):
    changed = [Record("1", "a new text", {"n": 1}), Record("2", RECORDS[2].text, {"n": "two"}), Record("new", "fresh")]
    report = index.add(RECORDS[:10] + changed)
    assert (report.added, report.updated, report.unchanged) == (1, 2, 8)
    assert index.search("a new text", k=1)[0].id == "1"
    assert index.search(RECORDS[2].text, k=1)[0].fields == {"n": "two"}
    assert len(index) == 41


def test_an_interrupted_run_is_completed_by_running_again(index):
    index.close()
    with sqlite3.connect(index.path / "docs.sqlite") as connection:  # as if killed before these were embedded
        connection.execute("DELETE FROM vectors WHERE document IN (SELECT rowid FROM documents WHERE id IN ('3', '4'))")
    reopened = Index.open(index.path)
    assert any("2 documents have no vector" in problem for problem in reopened.check())
    report = reopened.add(RECORDS)
    assert (report.updated, report.unchanged) == (2, 38)
    assert reopened.check() == []


def test_delete_by_id(index):
    assert sorted(index.delete(["3", "4", "missing"])) == ["3", "4"]
    assert len(index) == 38
    assert {hit.id for hit in index.search(RECORDS[3].text, k=40)}.isdisjoint({"3", "4"})
    assert index.search("topic", mode="keyword", k=40) and all(
        h.id not in ("3", "4") for h in index.search("topic", mode="keyword", k=40)
    )
    index.close()
    with Index.open(index.path) as reopened:
        assert len(reopened.vectors) == 38 and reopened.check() == []


def test_a_reader_sees_a_writers_changes_without_errors(index, tiny_embedder):
    reader = Index.open(index.path)
    before = reader.search(RECORDS[5].text, k=3)
    index.delete(["5"])
    after = reader.search(RECORDS[5].text, k=3)
    assert before[0].id == "5" and "5" not in {hit.id for hit in after} and len(after) == 3
    index.add([Record("late", "a late arrival")])
    assert reader.search("a late arrival", k=1)[0].id == "late"


def test_check_finds_and_repair_fixes_damage(index):
    index.close()
    (index.path / VECTORS_FILE).unlink()
    connection = sqlite3.connect(index.path / "docs.sqlite")
    connection.execute("DELETE FROM vectors WHERE document = (SELECT rowid FROM documents WHERE id = '7')")
    connection.execute("UPDATE manifest SET value = '999' WHERE key = 'documents'")
    connection.commit()
    connection.close()
    damaged = Index.open(index.path)
    problems = damaged.check()
    assert any("manifest counts 999" in p for p in problems)
    assert any("1 documents have no vector" in p for p in problems)
    assert damaged.check(repair=True) == []
    assert damaged.search(RECORDS[7].text, k=1)[0].id == "7"


def test_a_second_writer_waits_then_gives_up(index):
    index.lock_timeout = 0.2
    with FileLock(index.path / LOCK_FILE):
        with pytest.raises(IndexLockedError, match="gave up after 0.2 s"):
            index.add([Record("x", "blocked")])
        assert index.search(RECORDS[0].text, k=1)[0].id == "0"  # readers are not blocked
    assert index.add([Record("x", "now it goes")]).added == 1


def test_drop(index):
    index.close()
    assert drop_index(index.path) == index.path
    assert not index.path.exists()
    with pytest.raises(IndexNotFoundError):
        drop_index(index.path)


def test_cli_delete_check_and_drop(index, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("1\n2\n\nnope\n")
    result = runner.invoke(app, ["delete", "--index", str(index.path), "0", "--from", str(ids)])
    assert result.exit_code == 0, result.output
    assert "Deleted 3 documents" in result.stdout and "1 ids were not in it" in result.stdout
    assert runner.invoke(app, ["check", str(index.path)]).exit_code == 0
    (index.path / VECTORS_FILE).write_bytes(b"junk")
    junk = runner.invoke(app, ["check", str(index.path)])
    assert junk.exit_code == 1 and "Problem: " in junk.stderr and "unreadable FAISS index" in junk.stderr
    assert (index.path / VECTORS_FILE).read_bytes() == b"junk"  # check without --repair changes nothing
    with sqlite3.connect(index.path / "docs.sqlite") as connection:
        connection.execute("UPDATE manifest SET value = '0' WHERE key = 'documents'")
    broken = runner.invoke(app, ["check", str(index.path)])
    assert (
        broken.exit_code == 1
        and "Problem: the manifest counts 0 documents" in broken.stderr
        and "--repair" in broken.stderr
    )
    assert runner.invoke(app, ["check", str(index.path), "--repair"]).exit_code == 0
    assert runner.invoke(app, ["drop", str(index.path)], input="n\n").exit_code != 0
    assert index.path.exists()
    assert runner.invoke(app, ["drop", str(index.path), "--yes"]).exit_code == 0
    assert not index.path.exists()


def test_cli_skips_malformed_lines_on_request(tiny_model, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "a", "text": "fine"}\n{broken\n{"id": "b", "text": "also fine"}\n')
    stopped = runner.invoke(
        app, ["index", str(source), "--index", "s", "--model", str(tiny_model), "--home", str(tmp_path)]
    )
    assert stopped.exit_code == 1 and "docs.jsonl:2: invalid JSON" in stopped.stderr
    skipped = runner.invoke(
        app,
        [
            "index",
            str(source),
            "--index",
            "s",
            "--model",
            str(tiny_model),
            "--home",
            str(tmp_path),
            "--on-error",
            "skip",
        ],
    )
    assert skipped.exit_code == 0, skipped.output
    assert "Indexed 2 documents" in skipped.stdout and "Skipped 1 malformed records" in skipped.stderr
    info = json.loads(runner.invoke(app, ["info", "s", "--home", str(tmp_path), "--json"]).stdout)
    assert info["documents"] == 2
