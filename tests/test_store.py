import sqlite3

import numpy as np
import pytest

from searcher.errors import IndexCorruptError
from searcher.store import DocumentStore


@pytest.fixture
def store(tmp_path):
    return DocumentStore.create(tmp_path / "docs.sqlite", {"dimension": 4, "model": "m"})


def vectors(*rows):
    return np.array(rows, dtype=np.float32)


def test_upsert_assigns_rowids_and_counts_new(store):
    rowids, new = store.upsert([("a", "alpha", {}), ("b", "beta", {"lang": "el"})], vectors([1, 0, 0, 0], [0, 1, 0, 0]))
    assert new == 2 and len(set(rowids)) == 2
    documents = store.documents(rowids)
    assert documents[rowids[1]].id == "b"
    assert documents[rowids[1]].fields == {"lang": "el"}
    assert store.manifest()["documents"] == 2


def test_replacing_an_id_keeps_its_rowid(store):
    (first,), _ = store.upsert([("a", "alpha", {})], vectors([1, 0, 0, 0]))
    (again,), new = store.upsert([("a", "alpha two", {"v": 2})], vectors([0, 0, 1, 0]))
    assert (again, new) == (first, 0)
    assert store.count() == 1
    assert store.documents([first])[first].text == "alpha two"
    rowids, stored = store.vectors(4)
    np.testing.assert_array_equal(stored, vectors([0, 0, 1, 0]))


def test_vectors_round_trip_in_rowid_order(store):
    given = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    rowids, _ = store.upsert([(str(i), f"text {i}", {}) for i in range(5)], given)
    stored_ids, stored = store.vectors(4)
    np.testing.assert_array_equal(stored_ids, sorted(rowids))
    np.testing.assert_array_equal(stored, given)


def test_manifest_survives_reopening(store, tmp_path):
    store.close()
    reopened = DocumentStore.open(tmp_path / "docs.sqlite")
    assert reopened.manifest() == {"dimension": 4, "model": "m"}


def test_a_database_of_something_else_is_refused(tmp_path):
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)")
    with pytest.raises(IndexCorruptError, match="not a searcher index"):
        DocumentStore.open(tmp_path / "other.sqlite")


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    (tmp_path / "docs.sqlite").write_bytes(b"garbage" * 1000)
    with pytest.raises(IndexCorruptError, match="not a readable index database"):
        DocumentStore.open(tmp_path / "docs.sqlite")
