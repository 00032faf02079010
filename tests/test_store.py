import sqlite3

import numpy as np
import pytest

from searcher.errors import IndexCorruptError
from searcher.store import DocumentStore, StoredRow, StoredState, VectorOwner, content_hash, keyword_query


@pytest.fixture
def store(tmp_path):
    return DocumentStore.create(tmp_path / "docs.sqlite", {"dimension": 4, "model": "m"})


def vectors(*rows):
    return np.array(rows, dtype=np.float32)


def written(store, method, *arguments, **keywords):
    """Call a writing method of STORE inside its own transaction."""
    with store.transaction():
        return method(*arguments, **keywords)


def docs(*rows):
    """(id, text, fields) rows as upsert_documents takes them, with their content hash."""
    return [StoredRow(doc_id, text, fields, content_hash(text)) for doc_id, text, fields in rows]


def test_upsert_assigns_rowids(store):
    rowids, dropped = written(store, store.upsert_documents, docs(("a", "alpha", {}), ("b", "beta", {"lang": "el"})))
    assert dropped == [] and len(set(rowids)) == 2
    documents = store.documents(rowids)
    assert documents[rowids[1]].id == "b"
    assert documents[rowids[1]].fields == {"lang": "el"}
    assert store.manifest()["documents"] == 2
    assert store.stored(["a", "b", "zz"]) == {
        "a": StoredState(content_hash("alpha"), "{}", 0, 0, 0),
        "b": StoredState(content_hash("beta"), '{"lang": "el"}', 0, 0, 0),
    }


def test_replacing_a_document_keeps_its_rowid_and_drops_vectors_to_reembed(store):
    (first,), _ = written(store, store.upsert_documents, docs(("a", "alpha", {})))
    old = written(
        store,
        store.add_vectors,
        [VectorOwner(first, None, (0, 5)), VectorOwner(first, "another wording")],
        vectors([1, 0, 0, 0], [0, 1, 0, 0]),
    )
    assert (store.stored(["a"])["a"].passages, store.stored(["a"])["a"].phrasings) == (1, 1)
    (again,), dropped = written(store, store.upsert_documents, docs(("a", "alpha two", {"v": 2})), reembed={"a"})
    assert (again, sorted(dropped)) == (first, sorted(old))
    assert store.count() == 1 and len(store.vector_ids()) == 0
    assert store.documents([first])[first].text == "alpha two"


def test_fields_only_update_keeps_vectors(store):
    (first,), _ = written(store, store.upsert_documents, docs(("a", "alpha", {})))
    written(store, store.add_vectors, [VectorOwner(first)], vectors([1, 0, 0, 0]))
    _, dropped = written(store, store.upsert_documents, docs(("a", "alpha", {"v": 2})))
    assert dropped == [] and len(store.vector_ids()) == 1


def test_delete_removes_documents_vectors_and_keywords(store):
    rowids, _ = written(store, store.upsert_documents, docs(("a", "alpha words", {}), ("b", "beta words", {})))
    ids = written(
        store, store.add_vectors, [VectorOwner(rowids[0]), VectorOwner(rowids[1])], vectors([1, 0, 0, 0], [0, 1, 0, 0])
    )
    deleted, dropped = written(store, store.delete_documents, ["a", "missing"])
    assert (deleted, dropped) == (["a"], [ids[0]])
    assert store.count() == 1 and list(store.vector_ids()) == [ids[1]]
    assert [r for r, _ in store.keyword_search("words", 5)] == [rowids[1]]
    assert store.manifest()["documents"] == 1


def test_every_write_raises_the_generation(store):
    start = store.generation()
    (rowid,), _ = written(store, store.upsert_documents, docs(("a", "alpha", {})))
    written(store, store.add_vectors, [VectorOwner(rowid)], vectors([1, 0, 0, 0]))
    written(store, store.delete_documents, ["a"])
    assert store.generation() == start + 3


def test_large_id_lists_are_chunked(store):
    many = [(str(i), f"text {i}", {}) for i in range(25_000)]
    written(store, store.upsert_documents, docs(*many))
    assert len(store.stored([doc_id for doc_id, _, _ in many])) == 25_000


def test_vectors_round_trip_with_their_owners(store):
    rowids, _ = written(store, store.upsert_documents, docs(("a", "alpha", {}), ("b", "beta", {})))
    given = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    owners = [VectorOwner(rowids[0], None, (0, 5)), VectorOwner(rowids[1], None, (0, 4)), VectorOwner(rowids[1], "B?")]
    ids = written(store, store.add_vectors, owners, given)
    chunks = list(store.vectors(4, chunk=2))
    assert [len(chunk_ids) for chunk_ids, _ in chunks] == [2, 1]
    np.testing.assert_array_equal(np.concatenate([chunk_ids for chunk_ids, _ in chunks]), ids)
    np.testing.assert_array_equal(np.concatenate([chunk for _, chunk in chunks]), given)
    assert store.vector_owners(ids) == dict(zip(ids, owners, strict=True))
    found_owners, found = store.document_vectors([rowids[1]], 4)
    assert found_owners == owners[1:]
    np.testing.assert_array_equal(found, given[1:])


def test_keyword_search_ranks_by_bm25_with_stemming(store):
    rowids, _ = written(
        store,
        store.upsert_documents,
        docs(
            ("a", "How to index documents quickly", {}),
            ("b", "Cooking pasta at home", {}),
            ("c", "Indexing and indexes explained: an index of indexes", {}),
        ),
    )
    found = store.keyword_search("indexing", 10)
    assert [rowid for rowid, _ in found] == [rowids[2], rowids[0]]
    assert found[0][1] > found[1][1] > 0


def test_keyword_index_follows_updates(store):
    (rowid,), _ = written(store, store.upsert_documents, docs(("a", "old words", {})))
    written(store, store.upsert_documents, docs(("a", "new words", {})))
    assert store.keyword_search("old", 5) == []
    assert [r for r, _ in store.keyword_search("new", 5)] == [rowid]


@pytest.mark.parametrize(
    "query", ['"unbalanced', "a AND OR NOT", "prefix*", "(parens) )(", "col:umn", "NEAR(a b)", "^start -minus +plus"]
)
def test_fts_syntax_in_user_text_is_harmless(store, query):
    written(store, store.upsert_documents, docs(("a", "a start of something with prefix and parens", {})))
    assert isinstance(store.keyword_search(query, 5), list)


def test_keyword_query_quotes_every_word():
    assert keyword_query('say "hi" AND bye*') == '"say" OR "hi" OR "and" OR "bye"'
    assert keyword_query("?!") is None


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


def test_the_manifest_read_is_fresh_after_this_connections_writes_and_anothers(store):
    reader = DocumentStore.open(store.path)
    assert reader.manifest()["model"] == "m"
    store.update_manifest({"model": "other"})
    assert store.manifest()["model"] == "other"  # this connection's own write
    assert reader.manifest()["model"] == "other"  # another connection's
    reader.manifest()["model"] = "changed by a caller"
    assert reader.manifest()["model"] == "other"
    written(store, store.upsert_documents, docs(("a", "alpha", {})))
    assert reader.manifest()["documents"] == store.manifest()["documents"] == 1
