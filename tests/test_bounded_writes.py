"""A long write holds a bounded number of new vectors in memory: it compacts along the way, trains its IVF
cells as soon as there are enough vectors and again as the index grows, and rebuilds read the stored vectors
chunk by chunk."""

import numpy as np
import pytest

from searcher import Index, Record, Settings
from searcher.embedder import EmbeddedDocuments
from searcher.vectorfile import VectorFile, pending_limit
from searcher.vectors import MAX_CELLS, VectorIndex, cells_for

DIMENSION = 32  # the tiny model's


def unit_vectors(count, seed=0):
    vectors = np.random.default_rng(seed).normal(size=(count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def shards(vectors, size):
    """VECTORS as `add_embedded` shards of SIZE synthetic documents, document i holding vector i."""
    for start in range(0, len(vectors), size):
        block = vectors[start : start + size]
        records = [Record(f"doc-{start + i}", f"document {start + i}") for i in range(len(block))]
        yield records, EmbeddedDocuments(list(range(len(block))), block, 0)


@pytest.fixture
def saves(monkeypatch):
    """How many vectors the index held at each compaction (`VectorFile.save`), in order."""
    counts = []
    save = VectorFile.save

    def recorded(self):
        counts.append(len(self.vectors))
        save(self)

    monkeypatch.setattr(VectorFile, "save", recorded)
    return counts


def test_a_write_compacts_whenever_its_new_vectors_pass_the_buffer(tmp_path, tiny_embedder, saves):
    most = pending_limit(1, DIMENSION)  # 1 MB: 5,461 vectors of 32 floats
    vectors = unit_vectors(4 * most)
    with Index.create(tmp_path / "x", Settings(index_type="ivf"), embedder=tiny_embedder) as index:
        held = []
        report = index.add_embedded(
            shards(vectors, 500), progress=lambda _: held.append(index.vectors.changes), write_buffer_mb=1
        )
        assert report.added == len(vectors) and max(held) <= most
        past = (most // 500 + 1) * 500  # new vectors after the shard that takes them past the bound
        assert saves == [past, 2 * past, 3 * past, len(vectors)]  # then the end of the write saves the rest
        assert index.vectors.kind == "ivf" and index.check() == []
        # First trained on 5,500 vectors; trained again as they grew, so sized for what it holds now.
        assert index.vectors.search_width["nlist"] > cells_for(len(vectors)) / 2 > cells_for(past)
        found = index.search_many(["doc 7"], k=1, vectors=vectors[7:8])[0]
        assert [hit.id for hit in found] == ["doc-7"]


def test_a_long_write_saves_what_it_still_holds_at_its_end_however_little(tmp_path, tiny_embedder, saves):
    most = pending_limit(1, DIMENSION)
    past = (most // 500 + 1) * 500
    with Index.create(tmp_path / "x", embedder=tiny_embedder) as index:
        index.add_embedded(shards(unit_vectors(past + 200), 500), write_buffer_mb=1)
        assert saves == [past, past + 200]  # 200 new vectors: under 10 %, saved all the same
    with Index.open(tmp_path / "x") as reopened:
        assert len(reopened.vectors) == past + 200 and reopened.vectors.changes == 0


def test_without_a_bound_reached_the_vectors_are_saved_once_at_the_end(tmp_path, tiny_embedder, saves):
    with Index.create(tmp_path / "x", embedder=tiny_embedder) as index:
        index.add_embedded(shards(unit_vectors(3000), 500))
    assert saves == [3000]


def test_an_ivf_structure_is_trained_again_once_it_has_grown_about_fourfold():
    index = VectorIndex.build(DIMENSION, np.arange(30_000), unit_vectors(30_000), "ivf")
    cells = index.search_width["nlist"]
    assert cells == cells_for(30_000) and not index.outgrown(len(index))
    index.add(np.arange(30_000, 90_000), unit_vectors(60_000, seed=1))
    assert not index.outgrown(len(index))  # three times the vectors want √3 times the cells
    index.add(np.arange(90_000, 130_000), unit_vectors(40_000, seed=2))
    assert cells_for(130_000) >= 2 * cells and index.outgrown(len(index))
    assert not VectorIndex.build(DIMENSION, np.arange(9000), unit_vectors(9000), "flat").outgrown(1_000_000)


def test_cells_stop_growing_at_the_cap():
    assert cells_for(1_000_000) == 4000 and cells_for(5_000_000) == cells_for(100_000_000) == MAX_CELLS


@pytest.mark.parametrize("kind", ["ivfpq", "ivf", "flat", "hnsw"])
def test_a_structure_built_chunk_by_chunk_is_the_one_built_from_all_vectors_at_once(kind):
    vectors, ids = unit_vectors(12_000), np.arange(100, 12_100)
    whole = VectorIndex.build(DIMENSION, ids, vectors, kind)

    def chunks():
        return ((ids[start : start + 1000], vectors[start : start + 1000]) for start in range(0, len(ids), 1000))

    streamed = VectorIndex.build_from(DIMENSION, len(ids), chunks, kind)
    assert streamed.kind == whole.kind == kind
    np.testing.assert_array_equal(streamed.ids(), whole.ids())
    for query in unit_vectors(5, seed=3):
        assert streamed.search(query, 10) == whole.search(query, 10)


def test_only_flat_structures_give_their_vectors_back():
    vectors = unit_vectors(1500)
    flat = VectorIndex.build(DIMENSION, np.arange(5, 1505), vectors, "flat")
    ids, stored = flat.contents()
    np.testing.assert_array_equal(ids, np.arange(5, 1505))
    np.testing.assert_array_equal(stored, vectors)
    with pytest.raises(ValueError, match="ivf"):
        VectorIndex.build(DIMENSION, np.arange(1500), vectors, "ivf").contents()
