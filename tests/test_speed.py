"""The fast paths: token-budget batches, reduced precision recorded in the index, lazy imports."""

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_embedder import SENTENCES

import searcher.embedder
from searcher import EmbeddingSettings, Index, Record, load_settings
from searcher.embedder import Embedder, length_batches, resolve_precision
from searcher.errors import ConfigError
from searcher.paths import DOCS_FILE


def test_batches_respect_both_limits_and_cover_every_text_once():
    lengths = [5, 300, 12, 12, 80, 7, 256, 3, 40, 9]
    batches = length_batches(lengths, max_texts=3, max_tokens=400)
    assert sorted(position for batch in batches for position in batch) == list(range(len(lengths)))
    assert all(len(batch) <= 3 for batch in batches)
    assert all(len(batch) * lengths[batch[0]] <= 400 for batch in batches if len(batch) > 1)
    flat = [lengths[position] for batch in batches for position in batch]
    assert flat == sorted(lengths, reverse=True)


def test_a_text_longer_than_the_budget_goes_alone():
    assert length_batches([900, 10, 10], max_texts=64, max_tokens=100) == [[0], [1, 2]]


def test_short_texts_share_a_batch_long_ones_do_not():
    batches = length_batches([256] * 4 + [16] * 100, max_texts=64, max_tokens=1024)
    assert [len(batch) for batch in batches] == [4, 64, 36]


def test_token_budget_does_not_change_the_vectors(tiny_embedder):
    np.testing.assert_allclose(
        tiny_embedder.embed(SENTENCES, batch_tokens=20), tiny_embedder.embed(SENTENCES), atol=1e-5
    )


def test_last_layer_shortcut_matches_the_full_hidden_states(tiny_model):
    last = Embedder(EmbeddingSettings(str(tiny_model), layer=-1, pooling="mean", precision="fp32"), "cpu")
    encoding = last.encode(SENTENCES[1])
    states = last.hidden_states(encoding)[-1]
    expected = states.mean(axis=0) / np.linalg.norm(states.mean(axis=0))
    np.testing.assert_allclose(last.embed([SENTENCES[1]])[0], expected, atol=1e-5)
    np.testing.assert_allclose(
        Embedder(EmbeddingSettings(str(tiny_model), layer=4, pooling="mean", precision="fp32"), "cpu").embed(SENTENCES),
        last.embed(SENTENCES),
        atol=1e-6,
    )


# Naive int8 moves short texts most ("ok": cosine 0.81 with its fp32 vector): it is never chosen by auto.
@pytest.mark.parametrize("precision, mean, lowest", [("bf16", 0.99, 0.97), ("int8", 0.9, 0.75)])
def test_reduced_precision_stays_close_to_fp32(bundled_embedder, precision, mean, lowest):
    reduced = Embedder(EmbeddingSettings(precision=precision), "cpu")
    assert reduced.precision == precision
    cosines = (reduced.embed(SENTENCES) * bundled_embedder.embed(SENTENCES)).sum(axis=1)
    assert cosines.mean() > mean and cosines.min() > lowest, cosines
    assert reduced.embed(SENTENCES).dtype == np.float32


def test_auto_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(searcher.embedder, "cpu_runs_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(searcher.embedder, "cpu_runs_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("int8", torch.device("cpu")) == "int8"


def test_int8_off_the_cpu_and_unknown_precisions_are_refused():
    with pytest.raises(ConfigError, match="int8 runs on the CPU only"):
        resolve_precision("int8", torch.device("cuda"))
    with pytest.raises(ConfigError, match="choose one of auto, fp32, bf16, fp16, int8"):
        load_settings(precision="fp8")


def test_the_index_records_its_precision_and_queries_with_it(tiny_model, tmp_path):
    settings = load_settings(model=str(tiny_model), precision="int8", device="cpu")
    with Index.create(tmp_path / "int8", settings) as index:
        report = index.add([Record(str(i), text) for i, text in enumerate(SENTENCES)])
        assert index.manifest.spec.precision == "int8"
        assert 0 < report.model_seconds <= report.seconds
    with Index.open(tmp_path / "int8") as reopened:
        assert reopened.embedder.precision == "int8"
        assert reopened.search(SENTENCES[3], k=1)[0].id == "3"
        with pytest.raises(ConfigError, match="built with precision 'int8', not 'fp32'"):
            reopened.require_settings(settings.replace(precision="fp32"))


def test_an_index_from_before_precision_was_recorded_is_fp32(tiny_index):
    index = tiny_index([Record("a", "a document")])
    index.close()
    with sqlite3.connect(index.path / DOCS_FILE) as db:  # as an index written before precision was recorded
        db.execute("DELETE FROM manifest WHERE key = 'precision'")
    with Index.open(index.path) as reopened:
        assert reopened.manifest.spec.precision == "fp32"
        assert reopened.embedder.precision == "fp32"


def test_the_cli_starts_without_importing_torch_or_pandas():
    heavy = "{'torch', 'transformers', 'scipy', 'pandas'}"
    code = f"import sys, searcher.cli; print(json.dumps(sorted({heavy} & set(sys.modules))))"
    loaded = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(loaded.stdout) == []


def test_an_application_imports_pandas_after_searcher_as_usual():
    pytest.importorskip("pandas")
    code = "import searcher, pandas; print(pandas.Timestamp('2024-01-01').year)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "2024\n"
