"""Vector structures: flat, IVF and HNSW, the auto choice, reindexing without re-embedding."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import searcher.vectors
from searcher import Index, Record, Settings
from searcher.cli import app
from searcher.errors import ConfigError
from searcher.vectors import VectorIndex, resolve_type

runner = CliRunner()
RECORDS = [Record(f"d{i}", f"note {i} about {['billing', 'sync', 'export', 'sharing'][i % 4]} number {i * 7}") for i in range(1200)]


def unit_vectors(count, dimension=32, seed=0):
    vectors = np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_every_structure_finds_each_vector_under_its_own_id(kind):
    vectors = unit_vectors(3000)
    index = VectorIndex.build(32, np.arange(100, 3100), vectors, kind, {"nprobe": 1000, "ef_search": 200})
    assert index.kind == kind and len(index) == 3000
    assert [index.search(vectors[i], 1)[0][0] for i in (0, 1500, 2999)] == [100, 1600, 3099]


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
    assert resolve_type("auto", 50_000) == "flat" and resolve_type("auto", 50_001) == "ivf"
    assert resolve_type("ivf", 999) == "flat" and resolve_type("ivf", 1000) == "ivf"
    assert resolve_type("hnsw", 10) == "hnsw"
    with pytest.raises(ConfigError, match="choose one of auto, flat, ivf, hnsw"):
        resolve_type("ivfpq", 10)


def test_search_parameters_are_applied_and_kept_on_disk(tmp_path):
    index = VectorIndex.build(32, np.arange(3000), unit_vectors(3000), "ivf", {"nprobe": 3})
    index.save(tmp_path / "v.faiss")
    assert VectorIndex.load(tmp_path / "v.faiss", {"nprobe": 5})._inner.nprobe == 5
    assert VectorIndex.load(tmp_path / "v.faiss")._inner.nprobe == searcher.vectors.default_nprobe(index._inner.nlist)


@pytest.fixture
def index(tiny_index):
    return tiny_index(RECORDS)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_reindex_changes_the_structure_without_embedding(index, kind, monkeypatch):
    monkeypatch.setattr(type(index), "embedder", property(lambda self: pytest.fail("embedded again")))
    rebuilt = index.reindex(kind, {"nprobe": 64} if kind == "ivf" else {"ef_search": 128})
    assert rebuilt.kind == kind and len(rebuilt) == len(RECORDS)
    assert index.manifest["index_type"] == kind and index.check() == []


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_updates_and_deletes_keep_an_approximate_index_consistent(index, kind):
    index.reindex(kind, {"nprobe": 1000, "ef_search": 400})
    index.delete(["d5", "d6"])
    index.add([Record("d7", "a completely new text for seven"), Record("new", "brand new note")])
    assert index.check() == [] and index._vectors.kind == kind
    with Index.open(index.path) as reopened:
        assert reopened._vectors.kind == kind and reopened.check() == []
        assert reopened.search("a completely new text for seven", k=1)[0].id == "d7"
        assert reopened.search(RECORDS[300].text, k=1)[0].id == "d300"
        assert not {"d5", "d6"} & {hit.id for hit in reopened.search(RECORDS[5].text, k=20)}


def test_auto_switches_to_ivf_when_the_index_grows_past_the_limit(index, monkeypatch):
    assert index._vectors.kind == "flat"
    monkeypatch.setattr(searcher.vectors, "EXACT_LIMIT", 1_210)
    index.add([Record(f"more{i}", f"another note number {i}") for i in range(20)])
    assert index._vectors.kind == "ivf" and index.check() == []


def test_an_explicit_other_type_for_an_existing_index_points_to_reindex(index, tiny_model):
    settings = Settings(model=str(tiny_model), index_type="hnsw")
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
    for arguments, message in ((["--index-type", "annoy"], "invalid index type 'annoy'"),
                               (["--index-type", "ivf", "--nprobe", "0"], "nprobe must be a positive integer")):
        result = runner.invoke(app, ["reindex", name, *arguments, "--home", home])
        assert result.exit_code != 0 and message in result.stderr, result.output
