import numpy as np
import pytest

from searcher.errors import IndexCorruptError
from searcher.vectors import VectorIndex


def unit_vectors(count, dimension=16, seed=0):
    vectors = np.random.default_rng(seed).normal(size=(count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_search_equals_brute_force_cosine_ranking():
    vectors = unit_vectors(200)
    ids = np.arange(1000, 1200)
    index = VectorIndex.build(16, ids, vectors)
    for query in unit_vectors(5, seed=1):
        scores = vectors @ query
        expected = np.argsort(-scores)[:10]
        found = index.search(query, 10)
        assert [i for i, _ in found] == list(ids[expected])
        np.testing.assert_allclose([s for _, s in found], scores[expected], atol=1e-5)


def test_remove_then_add_replaces_the_vector_under_an_id():
    vectors = unit_vectors(3)
    index = VectorIndex.build(16, [1, 2, 3], vectors)
    index.remove([2])
    index.add([2], vectors[:1])
    assert len(index) == 3
    assert {i for i, s in index.search(vectors[0], 3) if s > 0.999} == {1, 2}


def test_asking_for_more_than_stored_returns_what_there_is():
    index = VectorIndex.build(16, [7], unit_vectors(1))
    assert [i for i, _ in index.search(unit_vectors(1)[0], 5)] == [7]


def test_save_and_load_round_trip(tmp_path):
    vectors = unit_vectors(20)
    index = VectorIndex.build(16, np.arange(20), vectors)
    index.save(tmp_path / "vectors.faiss")
    loaded = VectorIndex.load(tmp_path / "vectors.faiss")
    assert loaded.dimension == 16
    np.testing.assert_array_equal(loaded.ids(), np.arange(20))
    assert loaded.search(vectors[3], 3) == index.search(vectors[3], 3)
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.faiss"]


def test_unreadable_file_is_reported_as_corrupt(tmp_path):
    (tmp_path / "vectors.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(IndexCorruptError, match="vectors.faiss"):
        VectorIndex.load(tmp_path / "vectors.faiss")
