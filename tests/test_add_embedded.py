"""`Index.add_embedded`: documents whose vectors were made elsewhere store exactly as `Index.add` stores them."""

import numpy as np
import pytest

from searcher import Index, Record
from searcher.embedder import EmbeddedDocuments
from searcher.errors import IndexCorruptError

RECORDS = [
    Record("pw", "How do I reset my password?", {"category": "account"}, ("I forgot my password",)),
    Record("cancel", "How do I cancel my subscription?", {"category": "billing"}),
    Record("invoice", "Where can I download an invoice?", {"category": "billing"}),
    Record("dark", "Is there a dark mode?", {}, ("night theme", "black background")),
]


def shard(embedder, records):
    """RECORDS with their vectors as an actor makes them: text, then phrasings, record by record."""
    vectors = np.concatenate([embedder.embed([record.text, *record.phrasings]) for record in records])
    return records, EmbeddedDocuments(list(range(len(records))), vectors, 0)


def test_shards_store_what_add_stores(tmp_path, tiny_embedder):
    with (
        Index.create(tmp_path / "add", embedder=tiny_embedder) as added,
        Index.create(tmp_path / "shards", embedder=tiny_embedder) as stored,
    ):
        added.add(RECORDS)
        report = stored.add_embedded([shard(tiny_embedder, RECORDS[:2]), shard(tiny_embedder, RECORDS[2:])])
        assert (report.added, report.documents) == (4, 4) and stored.check() == []
        for query in ("lost my password", "night theme", "billing"):
            assert [(hit.id, hit.matched, round(hit.score, 5)) for hit in stored.search(query, k=4)] == [
                (hit.id, hit.matched, round(hit.score, 5)) for hit in added.search(query, k=4)
            ]


def test_a_later_shard_replaces_and_unchanged_documents_are_left_alone(tmp_path, tiny_embedder):
    with Index.create(tmp_path / "x", embedder=tiny_embedder) as index:
        index.add_embedded([shard(tiny_embedder, RECORDS)])
        edited = Record("cancel", "How do I end my plan?", {"category": "billing"})
        moved = Record("invoice", RECORDS[2].text, {"category": "documents"})
        report = index.add_embedded([shard(tiny_embedder, [RECORDS[0], edited, moved])])
        assert (report.added, report.updated, report.unchanged) == (0, 2, 1)
        assert index.search(edited.text, k=1)[0].id == "cancel" and len(index) == 4 and index.check() == []
        assert index.search(moved.text, k=1)[0].fields == {"category": "documents"}


def test_vectors_that_do_not_fit_the_shard_are_refused(tmp_path, tiny_embedder):
    with Index.create(tmp_path / "x", embedder=tiny_embedder) as index:
        records, embedded = shard(tiny_embedder, RECORDS)
        for vectors in (embedded.vectors[:-1], np.zeros((len(embedded.vectors), 8), dtype=np.float32)):
            with pytest.raises(IndexCorruptError, match="came with vectors of shape"):
                index.add_embedded([(records, EmbeddedDocuments(embedded.positions, vectors, 0))])
        assert len(index) == 0
