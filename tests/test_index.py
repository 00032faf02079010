import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from searcher import Hit, Index, Passage, Record, list_indexes, load_settings
from searcher.errors import ConfigError, EmptyQueryError, IndexExistsError, IndexNotFoundError, ModelMismatchError
from searcher.paths import VECTORS_FILE
from searcher.vectors import VectorIndex

FAQ = [
    Record("pw", "How do I reset my password?", {"category": "account"}),
    Record("cancel", "How do I cancel my subscription?", {"category": "billing"}),
    Record("invoice", "Where can I download an invoice for my last payment?", {"category": "billing"}),
    Record("dark", "Does the app have a dark mode for night-time use?", {"category": "display"}),
    Record("export", "Can I export all my notes as Markdown files?", {}),
]


@pytest.fixture
def faq_index(tiny_index):
    return tiny_index(FAQ, "faq")


def test_a_document_finds_itself_first(faq_index):
    for record in FAQ:
        best = faq_index.search(record.text, k=1)[0]
        assert best.id == record.id
        assert best.score == pytest.approx(1.0, abs=1e-5)
        assert best == Hit(
            record.id, best.score, record.text, record.fields, passage=Passage(0, len(record.text), record.text)
        )


def test_scores_are_cosine_similarities_in_descending_order(faq_index, tiny_embedder):
    query = "I forgot my login"
    hits = faq_index.search(query, k=5)
    vectors = tiny_embedder.embed([record.text for record in FAQ])
    cosine = vectors @ tiny_embedder.embed([query])[0]
    expected = [FAQ[i].id for i in np.argsort(-cosine)]
    assert [hit.id for hit in hits] == expected
    np.testing.assert_allclose([hit.score for hit in hits], np.sort(cosine)[::-1], atol=1e-5)


def test_reopened_index_gives_the_same_hits(faq_index, tiny_model):
    before = faq_index.search("billing question", k=3)
    faq_index.close()
    with Index.open(faq_index.path) as reopened:
        assert reopened.search("billing question", k=3) == before
        assert len(reopened) == len(FAQ)


def test_manifest_records_how_vectors_were_made(faq_index, tiny_model):
    manifest = faq_index.manifest
    assert manifest.spec.model == str(tiny_model)
    assert (manifest.spec.layer, manifest.spec.pooling, manifest.dimension, manifest.spec.max_length) == (
        -2,
        "mean",
        32,
        128,
    )
    assert manifest.documents == len(FAQ)
    assert len(manifest.spec.fingerprint) == 64
    assert manifest.spec == faq_index.embedder.spec


def test_existing_id_is_replaced_not_duplicated(faq_index):
    report = faq_index.add([Record("dark", "How do I print a note?", {"category": "printing"})])
    assert (report.added, report.updated) == (0, 1)
    assert len(faq_index) == len(FAQ)
    best = faq_index.search("How do I print a note?", k=1)[0]
    assert (best.id, best.fields) == ("dark", {"category": "printing"})


def test_repeated_ids_in_one_input_keep_the_last(tiny_embedder, tmp_path):
    index = Index.create(tmp_path / "dupes", embedder=tiny_embedder)
    report = index.add([Record("a", "first version"), Record("b", "other"), Record("a", "second version")])
    assert (report.added, report.duplicates) == (2, 1)
    assert index.search("second version", k=1)[0].text == "second version"


def test_empty_texts_are_skipped_and_counted(tiny_embedder, tmp_path):
    index = Index.create(tmp_path / "blank", embedder=tiny_embedder)
    report = index.add([Record("a", "   "), Record("b", "real text")])
    assert (report.added, report.skipped_empty) == (1, 1)
    assert len(index) == 1


def test_long_documents_are_split_into_passages_not_cut(faq_index):
    report = faq_index.add([Record("long", "word " * 500)])
    assert (report.truncated, report.split, report.max_length) == (0, 1, 128)
    assert report.passages > 1


def test_missing_vector_file_is_rebuilt_in_memory_and_saved_only_by_repair(faq_index, caplog):
    before = faq_index.search("reset password", k=3)
    faq_index.close()
    (faq_index.path / VECTORS_FILE).unlink()
    with Index.open(faq_index.path) as reopened:
        assert reopened.search("reset password", k=3) == before
        assert "rebuilt in memory" in caplog.text
        assert reopened.check() == [
            "vectors.faiss is missing (searches rebuild it in memory each time the index is opened)"
        ]
    assert not (faq_index.path / VECTORS_FILE).exists()  # readers never write
    with Index.open(faq_index.path) as repaired:
        assert repaired.check(repair=True) == []
    assert (faq_index.path / VECTORS_FILE).exists()
    with Index.open(faq_index.path) as reopened:
        assert reopened.check() == [] and reopened.search("reset password", k=3) == before


def test_vector_file_that_disagrees_with_sqlite_is_rebuilt(faq_index):
    before = faq_index.search("night mode", k=5)
    faq_index.close()
    VectorIndex.empty(32).save(faq_index.path / VECTORS_FILE)  # as if a crash came before the final save
    with Index.open(faq_index.path) as reopened:
        assert reopened.search("night mode", k=5) == before


def test_changed_model_weights_are_refused(tiny_model_copy, tmp_path):
    index = Index.create(tmp_path / "pinned", load_settings(model=str(tiny_model_copy), device="cpu"))
    index.add(FAQ)
    index.close()
    weights = tiny_model_copy / "model.safetensors"
    tensors = load_file(weights)
    tensors["encoder.layer.0.output.dense.weight"] *= 2
    save_file(tensors, weights, metadata={"format": "pt"})
    with Index.open(tmp_path / "pinned") as reopened:
        with pytest.raises(ModelMismatchError, match="different copy"):
            reopened.search("password")


def test_query_uses_the_manifest_settings_not_the_defaults(tiny_model, tmp_path):
    settings = load_settings(model=str(tiny_model), layer=0, pooling="max", device="cpu")
    with Index.create(tmp_path / "layer0", settings) as index:
        index.add(FAQ)
    with Index.open(tmp_path / "layer0") as reopened:
        assert (reopened.embedder.layer, reopened.embedder.pooling) == (0, "max")
        assert reopened.search(FAQ[2].text, k=1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_open_or_create_refuses_other_embedding_settings(faq_index, tiny_model):
    faq_index.close()
    with Index.open_or_create(faq_index.path, load_settings(layer="auto", pooling="mean")) as same:
        assert len(same) == len(FAQ)
    with pytest.raises(ConfigError, match="built with pooling 'mean', not 'cls'"):
        Index.open_or_create(faq_index.path, load_settings(pooling="cls"))


def test_create_refuses_an_existing_index(faq_index, tiny_embedder):
    with pytest.raises(IndexExistsError):
        Index.create(faq_index.path, embedder=tiny_embedder)


def test_open_missing_index(tmp_path):
    with pytest.raises(IndexNotFoundError, match="no index named 'nothing'"):
        Index.open("nothing", home=tmp_path)


@pytest.mark.parametrize("query", ["", "   \n"])
def test_empty_query_is_refused(faq_index, query):
    with pytest.raises(EmptyQueryError):
        faq_index.search(query)


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_invalid_k_is_refused(faq_index, k):
    with pytest.raises(ConfigError, match="k must be"):
        faq_index.search("password", k=k)


def test_empty_index_returns_no_hits(tiny_embedder, tmp_path):
    assert Index.create(tmp_path / "empty", embedder=tiny_embedder).search("anything") == []


def test_names_live_under_the_home_directory(tiny_embedder, tmp_path):
    Index.create("alpha", home=tmp_path, embedder=tiny_embedder).close()
    Index.create("beta", home=tmp_path, embedder=tiny_embedder).close()
    (tmp_path / "not-an-index").mkdir()
    assert list_indexes(tmp_path) == ["alpha", "beta"]
    assert Index.open("beta", home=tmp_path).path == tmp_path / "beta"


def test_info_reports_counts_and_size(faq_index):
    info = faq_index.info()
    assert info["documents"] == len(FAQ)
    assert info["size_bytes"] > 0
    assert info["manifest"]["pooling"] == "mean"
