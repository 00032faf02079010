"""Writes proportional to the change: the vector file is not rewritten by each write; every process applies the
vectors added and removed since the generation it holds, and a compaction rewrites the file now and then."""

import sqlite3

import pytest

import searcher.vectorfile
import searcher.vectors
from searcher import Index, Record, Settings
from searcher.paths import DOCS_FILE, VECTORS_FILE

DOCUMENTS = [Record(f"d{i}", f"document number {i} about topic {i % 5}") for i in range(40)]


@pytest.fixture
def pair(tiny_index, tiny_embedder):
    """A writer and a reader (another `Index` over the same files, as another process would hold) that has
    searched, so that its vectors are loaded."""
    writer = tiny_index(DOCUMENTS)
    writer.check(repair=True)  # the file saved whole, the starting point of every test
    reader = Index.open(writer.path, embedder=tiny_embedder)
    reader.search("topic", k=3)
    yield writer, reader
    reader.close()
    writer.close()


def file_state(index):
    stat = (index.path / VECTORS_FILE).stat()
    return stat.st_ino, stat.st_mtime_ns


def removals(index):
    connection = sqlite3.connect(index.path / DOCS_FILE)
    try:
        return connection.execute("SELECT count(*) FROM vector_removals").fetchone()[0]
    finally:
        connection.close()


def test_a_write_leaves_the_file_alone_and_readers_catch_up_from_sqlite(pair):
    writer, reader = pair
    before = file_state(writer)
    writer.add(
        [Record("new", "a brand new document on gardening"), Record("d3", "document three rewritten on cooking")]
    )
    writer.delete(["d7"])
    assert file_state(writer) == before
    manifest = writer.manifest
    assert manifest.vectors_generation < manifest.generation and removals(writer) == 2  # d3's old vector, d7's
    for index in (writer, reader):
        assert index.search("a brand new document on gardening", k=1)[0].id == "new"
        assert index.search("document three rewritten on cooking", k=1)[0].id == "d3"
        assert "d7" not in {hit.id for hit in index.search("document number 7 about topic 2", k=40)}
        assert len(index.vectors) == len(DOCUMENTS) and index.vectors.changes == 4  # 2 added, 2 of the file's gone
    assert reader.check() == [] and writer.check() == []


def test_a_reopened_index_applies_the_logged_writes_to_the_saved_file(pair, tiny_embedder, caplog):
    writer, _ = pair
    writer.delete(["d1", "d2"])
    writer.add([Record("late", "a late addition about astronomy")])
    with Index.open(writer.path, embedder=tiny_embedder) as fresh:
        assert fresh.search("a late addition about astronomy", k=1)[0].id == "late"
        assert not {"d1", "d2"} & {hit.id for hit in fresh.search("document number", k=40)}
    assert "rebuilt in memory" not in caplog.text


def test_compaction_rewrites_the_file_once_changes_pass_a_share_and_forgets_old_removals(pair, monkeypatch):
    writer, reader = pair
    monkeypatch.setattr(searcher.vectorfile, "COMPACTION_MINIMUM", 3)
    before = file_state(writer)
    writer.delete(["d0"])
    assert file_state(writer) == before
    writer.delete(["d1", "d2", "d3"])  # 4 changes: past 3 and 10% of 40
    assert file_state(writer) != before
    manifest = writer.manifest
    assert manifest.vectors_generation == manifest.generation and writer.vectors.changes == 0
    assert removals(writer) == 4  # kept: a reader of the previous file still needs them
    writer.delete(["d4", "d5", "d6", "d8"])
    assert removals(writer) == 4  # those before the previous file's generation are gone
    found = {hit.id for hit in reader.search("document number", k=40)}
    assert len(found) == 32 and not {"d0", "d1", "d2", "d3", "d4", "d5", "d6", "d8"} & found
    assert reader.check() == []


def test_a_reader_behind_the_forgotten_removals_loads_the_new_file(pair, monkeypatch):
    writer, reader = pair
    monkeypatch.setattr(searcher.vectorfile, "COMPACTION_MINIMUM", 1)
    monkeypatch.setattr(searcher.vectorfile, "COMPACTION_SHARE", 0)
    for document_id in ("d10", "d11", "d12"):  # three compactions while the reader does not look
        writer.delete([document_id])
    assert writer.manifest.raw["removals_horizon"] > 0
    found = {hit.id for hit in reader.search("document number", k=40)}
    assert len(found) == 37 and not {"d10", "d11", "d12"} & found


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_every_structure_leaves_removed_vectors_out_of_its_searches(tiny_embedder, tmp_path, index_type, monkeypatch):
    monkeypatch.setitem(searcher.vectors.MIN_TRAINING, "ivf", 100)
    monkeypatch.setattr(searcher.vectorfile, "COMPACTION_MINIMUM", 10_000)  # the writes stay apart from the file
    records = [Record(f"r{i}", f"record {i} on subject {i % 7}") for i in range(300)]
    with Index.create(tmp_path / index_type, Settings(index_type=index_type), embedder=tiny_embedder) as index:
        index.add(records)
        index.reindex(index_type, {"nprobe": 1000, "ef_search": 400})  # searched whole: every hit can be counted
        index.delete([f"r{i}" for i in range(0, 300, 3)])
        index.add([Record("r1", "record one replaced by a text on volcanoes")])
        assert index.vectors.kind == index_type and index.vectors.changes == 102
        with Index.open(index.path, embedder=tiny_embedder) as reader:
            for searcher_ in (index, reader):
                hits = searcher_.search("record 3 on subject 3", k=300)
                assert len(hits) == 200 and not any(int(hit.id[1:]) % 3 == 0 for hit in hits)
                assert searcher_.search("record one replaced by a text on volcanoes", k=1)[0].id == "r1"
            assert reader.check() == []


def test_check_reports_a_file_the_log_cannot_bring_up_to_date(pair):
    writer, _ = pair
    writer.delete(["d9"])
    connection = sqlite3.connect(writer.path / DOCS_FILE)
    with connection:
        connection.execute("DELETE FROM vector_removals")  # as if forgotten: the file still holds d9
    connection.close()
    assert writer.check() == ["vectors.faiss is out of step with docs.sqlite (searches rebuild it in memory on open)"]
    assert writer.check(repair=True) == [] and writer.manifest.vectors_generation == writer.manifest.generation
