"""Vector structures: flat, IVF, IVF-PQ and HNSW, the auto choice, memory-mapped loading, reindexing without
re-embedding."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import searcher.vectors
from searcher import Index, Record, load_settings
from searcher.cli import app
from searcher.errors import ConfigError
from searcher.vectors import VectorIndex, resolve_type

runner = CliRunner()
RECORDS = [
    Record(f"d{i}", f"note {i} about {['billing', 'sync', 'export', 'sharing'][i % 4]} number {i * 7}")
    for i in range(1200)
]


def unit_vectors(count, dimension=32, seed=0):
    vectors = np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
def test_every_structure_finds_each_vector_under_its_own_id(kind):
    vectors = unit_vectors(12_000)
    index = VectorIndex.build(32, np.arange(100, 12_100), vectors, kind, {"nprobe": 1000, "ef_search": 200})
    assert index.kind == kind and len(index) == 12_000
    exact = lambda ids: vectors[ids - 100]  # noqa: E731
    assert [index.search(vectors[i], 1, exact)[0][0] for i in (0, 6000, 11_999)] == [100, 6100, 12_099]


def test_ivfpq_candidates_are_rescored_with_the_exact_vectors():
    vectors = unit_vectors(12_000)
    index = VectorIndex.build(32, np.arange(12_000), vectors, "ivfpq", {"nprobe": 1000})
    query = vectors[7]
    approximate = index.search(query, 5)
    exact = index.search(query, 5, lambda ids: vectors[ids])
    assert [score for _, score in exact] == pytest.approx([float(vectors[i] @ query) for i, _ in exact], abs=1e-6)
    assert exact[0] == (7, pytest.approx(1.0, abs=1e-6)) and approximate[0][1] != pytest.approx(1.0, abs=1e-6)
    truth = np.argsort(-(vectors @ query))[:5]
    assert len({i for i, _ in exact} & set(truth.tolist())) >= 4  # random 32-d vectors are PQ's hardest case


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_removal_keeps_the_other_ids_right(kind):
    vectors = unit_vectors(3000)
    index = VectorIndex.build(32, np.arange(100, 3100), vectors, kind, {"nprobe": 1000})
    index.remove([106, 2000])
    assert len(index) == 2998 and 106 not in index.ids() and 2000 not in index.ids()
    assert [index.search(vectors[i], 1)[0][0] for i in (10, 2500)] == [110, 2600]


def test_hnsw_cannot_remove_in_place():
    assert not VectorIndex.build(32, np.arange(50), unit_vectors(50), "hnsw").removes


def test_auto_is_exact_until_fifty_thousand_and_ivf_needs_enough_vectors_to_train():
    assert resolve_type("auto", 50_000) == "flat" and resolve_type("auto", 50_001) == "ivfpq"
    assert resolve_type("ivf", 999) == "flat" and resolve_type("ivf", 1000) == "ivf"
    assert resolve_type("ivfpq", 9_999) == "flat" and resolve_type("ivfpq", 10_000) == "ivfpq"
    assert resolve_type("hnsw", 10) == "hnsw"
    with pytest.raises(ConfigError, match="choose one of auto, flat, ivf, ivfpq, hnsw"):
        resolve_type("annoy", 10)


def test_pq_codes_take_about_a_byte_per_eight_dimensions():
    assert [searcher.vectors.pq_parts(d) for d in (384, 768, 32, 100, 7)] == [48, 96, 4, 10, 1]


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_ivf_files_are_memory_mapped_read_only(tmp_path, kind):
    vectors = unit_vectors(12_000)
    VectorIndex.build(32, np.arange(12_000), vectors, kind, {"nprobe": 1000}).save(tmp_path / "v.faiss")
    mapped = VectorIndex.load(tmp_path / "v.faiss", mmap=True)
    assert mapped.read_only and mapped.kind == kind
    assert mapped.search(vectors[42], 1, lambda ids: vectors[ids])[0][0] == 42
    assert not VectorIndex.load(tmp_path / "v.faiss").read_only


def test_search_parameters_are_applied_and_kept_on_disk(tmp_path):
    index = VectorIndex.build(32, np.arange(3000), unit_vectors(3000), "ivf", {"nprobe": 3})
    index.save(tmp_path / "v.faiss")
    assert VectorIndex.load(tmp_path / "v.faiss", {"nprobe": 5}).search_width["nprobe"] == 5
    cells = index.search_width["nlist"]
    assert VectorIndex.load(tmp_path / "v.faiss").search_width == {
        "nprobe": searcher.vectors.default_nprobe(cells),
        "nlist": cells,
    }


@pytest.fixture
def index(tiny_index):
    return tiny_index(RECORDS)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_reindex_changes_the_structure_without_embedding(index, kind, monkeypatch):
    monkeypatch.setattr(type(index), "embedder", property(lambda self: pytest.fail("embedded again")))
    rebuilt = index.reindex(kind, {"nprobe": 64} if kind == "ivf" else {"ef_search": 128})
    assert rebuilt.kind == kind and len(rebuilt) == len(RECORDS)
    assert index.manifest.index_type == kind and index.check() == []


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_updates_and_deletes_keep_an_approximate_index_consistent(index, kind, monkeypatch):
    monkeypatch.setitem(searcher.vectors.MIN_TRAINING, "ivfpq", 1000)
    index.reindex(kind, {"nprobe": 1000, "ef_search": 400})
    index.delete(["d5", "d6"])
    index.add([Record("d7", "a completely new text for seven"), Record("new", "brand new note")])
    assert index.check() == [] and index.vectors.kind == kind
    with Index.open(index.path) as reopened:
        assert reopened.vectors.kind == kind and reopened.check() == []
        assert reopened.search("a completely new text for seven", k=1)[0].id == "d7"
        assert reopened.search(RECORDS[300].text, k=1)[0].id == "d300"
        assert not {"d5", "d6"} & {hit.id for hit in reopened.search(RECORDS[5].text, k=20)}


def test_auto_switches_to_ivfpq_when_the_index_grows_past_the_limit(index, monkeypatch):
    assert index.vectors.kind == "flat"
    monkeypatch.setattr(searcher.vectors, "EXACT_LIMIT", 1_210)
    monkeypatch.setitem(searcher.vectors.MIN_TRAINING, "ivfpq", 1000)
    index.add([Record(f"more{i}", f"another note number {i}") for i in range(20)])
    assert index.vectors.kind == "ivfpq" and index.check() == []


def test_a_reader_maps_the_ivf_file_and_a_writer_loads_it_to_change_it(index):
    index.reindex("ivf", {"nprobe": 1000})
    with Index.open(index.path) as reopened:
        assert reopened.vectors.read_only
        reopened.add([Record("late", "a note written after the file was mapped")])
        assert not reopened.vectors.read_only and reopened.check() == []
        assert reopened.search("a note written after the file was mapped", k=1)[0].id == "late"


def test_a_writer_starts_from_what_another_process_saved(index, caplog):
    with Index.open(index.path) as other:
        index.add([Record("first", "written by the first writer")])
        other.add([Record("second", "written by the second writer")])
    with caplog.at_level("WARNING"), Index.open(index.path) as reopened:
        assert reopened.check() == [] and len(reopened.vectors) == len(RECORDS) + 2
    assert "rebuilt" not in caplog.text


def test_an_explicit_other_type_for_an_existing_index_points_to_reindex(index, tiny_model):
    settings = load_settings(model=str(tiny_model), index_type="hnsw")
    with pytest.raises(ConfigError, match="change it with `searcher reindex idx --index-type hnsw`"):
        Index.open_or_create(index.path, settings)


def test_reindex_command(index):
    index.close()
    home, name = str(index.path.parent), index.path.name
    result = runner.invoke(app, ["reindex", name, "--index-type", "ivf", "--nprobe", "16", "--home", home])
    assert result.exit_code == 0, result.output
    assert "Rebuilt idx as ivf over 1,200 vectors" in result.stdout
    manifest = json.loads(runner.invoke(app, ["info", name, "--home", home, "--json"]).stdout)["manifest"]
    assert (manifest["index_type"], manifest["search_params"]) == ("ivf", {"nprobe": 16})
    for arguments, message in (
        (["--index-type", "annoy"], "invalid index type 'annoy'"),
        (["--index-type", "ivf", "--nprobe", "0"], "nprobe must be a positive integer"),
    ):
        result = runner.invoke(app, ["reindex", name, *arguments, "--home", home])
        assert result.exit_code != 0 and message in result.stderr, result.output
