import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import declare_trained_pooling
from safetensors.torch import load_file, save_file

import searcher.embedder
from searcher import EmbeddingSettings
from searcher.embedder import Embedder, model_fingerprint, on_model_thread
from searcher.errors import ConfigError, ModelError

SENTENCES = [
    "How do I reset my password?",
    "The bank robber was seen fishing on the Mississippi river bank, far from the vault he had emptied.",
    "ok",
    "Cancel my subscription before the next billing cycle starts, please, I no longer need the premium plan.",
    "Where can I download an invoice?",
]


def load(model, **settings):
    """An embedder on the CPU, in fp32 unless told otherwise."""
    return Embedder(EmbeddingSettings(model, **({"precision": "fp32"} | settings)), "cpu")


def test_vectors_are_unit_length_float32(tiny_embedder):
    vectors = tiny_embedder.embed(SENTENCES)
    assert vectors.shape == (len(SENTENCES), 32)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_vector_does_not_depend_on_batch_neighbours(tiny_embedder):
    alone = np.stack([tiny_embedder.embed([text])[0] for text in SENTENCES])
    batched = tiny_embedder.embed(SENTENCES, batch_size=3)
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_results_come_back_in_input_order(tiny_embedder):
    forward = tiny_embedder.embed(SENTENCES, batch_size=2)
    backward = tiny_embedder.embed(SENTENCES[::-1], batch_size=2)
    np.testing.assert_allclose(backward[::-1], forward, atol=1e-5)


def test_plain_bert_defaults_to_mean_of_second_to_last_layer(tiny_embedder):
    assert (tiny_embedder.layer, tiny_embedder.pooling) == (-2, "mean")


def test_declared_trained_pooling_is_used(tiny_model_copy):
    declare_trained_pooling(tiny_model_copy, "pooling_mode_cls_token")
    embedder = load(str(tiny_model_copy))
    assert (embedder.layer, embedder.pooling) == (-1, "cls")


def test_unsupported_trained_pooling_is_refused(tiny_model_copy):
    declare_trained_pooling(tiny_model_copy, "pooling_mode_weightedmean_tokens")
    with pytest.raises(ModelError, match="--pooling"):
        load(str(tiny_model_copy))


def test_explicit_layer_and_pooling_override_auto(tiny_model):
    embedder = load(str(tiny_model), layer=0, pooling="max")
    assert (embedder.layer, embedder.pooling) == (0, "max")
    other = load(str(tiny_model), layer=-1, pooling="mean")
    assert not np.allclose(embedder.embed(SENTENCES[:1]), other.embed(SENTENCES[:1]))


@pytest.mark.parametrize("layer", [5, -6])
def test_layer_outside_the_model_is_refused(tiny_model, layer):
    with pytest.raises(ConfigError, match="0 \\(embeddings\\) to 4"):
        load(str(tiny_model), layer=layer)


def test_max_length_over_the_model_limit_is_refused(tiny_model):
    with pytest.raises(ConfigError, match="limit of 128"):
        load(str(tiny_model), max_length=129)


def test_truncation_is_counted(tiny_model):
    embedder = load(str(tiny_model), max_length=12)
    tokenized = embedder.tokenize(SENTENCES)
    assert tokenized.truncated == 2
    assert max(len(ids) for ids in tokenized.ids) == 12
    assert all(ids[0] == 101 and ids[-1] == 102 for ids in tokenized.ids)


def test_missing_model_directory_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load(str(tmp_path / "nowhere"))


def test_directory_without_a_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot load model"):
        load(str(tmp_path))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_half_precision_checkpoint_runs_at_the_precision_asked_for(tiny_model_copy, tiny_model, precision):
    weights = load_file(tiny_model_copy / "model.safetensors")
    save_file(
        {name: tensor.half() for name, tensor in weights.items()},
        tiny_model_copy / "model.safetensors",
        metadata={"format": "pt"},
    )
    config = json.loads((tiny_model_copy / "config.json").read_text())
    (tiny_model_copy / "config.json").write_text(json.dumps(config | {"dtype": "float16", "torch_dtype": "float16"}))
    stored_half = load(str(tiny_model_copy), precision=precision)
    assert {str(p.dtype) for p in stored_half.model.parameters()} <= {"torch.float32"}
    full = load(str(tiny_model), precision=precision)
    assert np.abs(stored_half.embed(SENTENCES) - full.embed(SENTENCES)).max() < 1e-2


def test_unavailable_device_is_refused(tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="not available"):
        Embedder(EmbeddingSettings(str(tiny_model)), "cuda")


def test_fingerprint_follows_the_weights(tiny_model_copy):
    before = model_fingerprint(tiny_model_copy)
    weights = tiny_model_copy / "model.safetensors"
    tensors = load_file(weights)
    tensors["embeddings.word_embeddings.weight"][0, 0] += 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    assert model_fingerprint(tiny_model_copy) != before


def test_fingerprint_is_cached_by_size_and_mtime(tiny_model_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCHER_CACHE_DIR", str(tmp_path / "cache"))
    first = model_fingerprint(tiny_model_copy)
    cache_file = tmp_path / "cache" / "fingerprints.json"
    entries = json.loads(cache_file.read_text())
    assert str((tiny_model_copy / "model.safetensors").resolve()) in entries
    for entry in entries.values():
        entry[2] = "0" * 64  # a cached hash is trusted while size and mtime are unchanged
    cache_file.write_text(json.dumps(entries))
    assert model_fingerprint(tiny_model_copy) != first


def test_bundled_model_auto_settings(bundled_embedder):
    assert bundled_embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert (bundled_embedder.layer, bundled_embedder.pooling) == (-1, "mean")
    assert (bundled_embedder.dimension, bundled_embedder.max_length) == (384, 256)


def test_bundled_model_matches_sentence_transformers(bundled_embedder):
    """The default pipeline reproduces the model's own trained pooling, so published scores apply."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(bundled_embedder.model_dir), device="cpu")
    expected = reference.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(bundled_embedder.embed(SENTENCES), expected, atol=1e-5)


@pytest.mark.slow
def test_using_the_embedder_leaves_the_host_applications_transformers_logging_alone(tiny_model):
    script = (
        "from transformers.utils import logging; logging.set_verbosity_info()\n"
        "from searcher import EmbeddingSettings\n"
        "from searcher.embedder import Embedder\n"
        f"Embedder(EmbeddingSettings({str(tiny_model)!r}), 'cpu').embed(['word ' * 500])\n"
        "print(logging.get_verbosity())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["20"]  # logging.INFO, as the application set it


def test_every_forward_pass_runs_on_one_thread_whichever_thread_asks(tiny_model, monkeypatch):
    """A second thread running torch would start a second OpenMP team, which slows every pass of the first."""
    ran_on = set()
    forward = searcher.embedder.Embedder._forward_here

    def recorded(self, ids):
        ran_on.add(threading.get_ident())
        return forward(self, ids)

    monkeypatch.setattr(searcher.embedder.Embedder, "_forward_here", recorded)
    embedder = load(str(tiny_model))
    alone = embedder.embed(SENTENCES)
    with ThreadPoolExecutor(4) as callers:
        answers = list(callers.map(lambda text: embedder.embed([text])[0], SENTENCES * 4))
    np.testing.assert_allclose(np.stack(answers), np.concatenate([alone] * 4), atol=1e-5)
    assert len(ran_on) == 1 and ran_on != {threading.get_ident()}
    assert ran_on == {on_model_thread(threading.get_ident)}


def test_work_already_on_the_model_thread_runs_there_at_once():
    assert on_model_thread(lambda: on_model_thread(threading.get_ident)) == on_model_thread(threading.get_ident)


def test_an_exception_on_the_model_thread_reaches_the_caller():
    def fail():
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        on_model_thread(fail)
