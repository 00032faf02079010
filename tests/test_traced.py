"""The traced-model cache: a trace gives the model's very vectors, a later process loads it without importing
transformers, and a damaged, unwritable or untraceable cache only costs time."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

import searcher.embedder
from searcher import EmbeddingSettings
from searcher.embedder import Embedder
from searcher.traced import trace

SHORT = ["ok"]  # a batch of one, unpadded
EVEN = ["first text here", "other text here"]  # two texts of one length: a batch without padding
MIXED = [
    "How do I reset my password?",
    "The bank robber was seen fishing on the Mississippi river bank, far from the vault he had emptied.",
    "ok",
]
AT_THE_LIMIT = ["word " * 1000]  # cut to the model's limit
LONG = "\n\n".join(f"Paragraph {i} of the garden guide. " + "It covers hedges and lawns. " * 12 for i in range(6))


def load(model, cache, monkeypatch, **settings):
    """An embedder on the CPU that keeps its traces in CACHE."""
    monkeypatch.setenv("SEARCHER_CACHE_DIR", str(cache))
    return Embedder(EmbeddingSettings(str(model), **({"precision": "fp32"} | settings)), "cpu")


def vectors(embedder):
    """Vectors of batches of every shape: one text, unpadded, padded, at the model's limit, and passages."""
    documents = list(embedder.embed_documents([(LONG, "Garden guide", ("tending a garden",)), ("ok", "", ())]))
    assert sum(len(spans) for batch in documents for spans in batch.spans or []) > 2  # LONG is split
    batches = [embedder.embed(texts) for texts in (SHORT, EVEN, MIXED, AT_THE_LIMIT)]
    return np.concatenate(batches + [batch.vectors for batch in documents])


@pytest.fixture
def unwritable(tmp_path):
    """A cache directory that cannot be made: its parent is a file."""
    (tmp_path / "a file").write_text("")
    return tmp_path / "a file" / "cache"


@pytest.mark.parametrize("settings", [{}, {"precision": "bf16"}, {"layer": -1}, {"layer": 0, "pooling": "cls"}])
def test_the_trace_gives_the_models_very_vectors(tiny_model, tmp_path, unwritable, monkeypatch, settings):
    eager = load(tiny_model, unwritable, monkeypatch, **settings)
    traced = load(tiny_model, tmp_path / "cache", monkeypatch, **settings)  # traces the model, and runs the trace
    cached = load(tiny_model, tmp_path / "cache", monkeypatch, **settings)  # loads the trace
    assert not isinstance(eager.model, torch.jit.ScriptModule)
    assert isinstance(traced.model, torch.jit.ScriptModule) and isinstance(cached.model, torch.jit.ScriptModule)
    expected = vectors(eager)
    assert np.array_equal(vectors(traced), expected)
    assert np.array_equal(vectors(cached), expected)
    assert cached.spec == eager.spec


def test_a_process_with_the_trace_in_its_cache_never_imports_transformers(tiny_model, tmp_path, monkeypatch):
    load(tiny_model, tmp_path / "cache", monkeypatch)  # the first process: it traces the model
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps({"id": "1", "text": "one short text"}) + "\n")
    index = str(tmp_path / "idx")
    commands = [
        ["index", str(source), "--index", index, "--model", str(tiny_model), "--precision", "fp32", "--device", "cpu"],
        ["query", "a short text", "--index", index, "--device", "cpu"],
    ]
    script = (
        "import json, sys\n"
        "from searcher.cli import app\n"
        f"for command in {commands!r}:\n"
        "    try:\n"
        "        app(command)\n"
        "    except SystemExit as exit:\n"
        "        assert not exit.code, exit.code\n"
        "print(json.dumps(sorted({'transformers', 'sentence_transformers'} & set(sys.modules))))\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(ran.stdout.splitlines()[-1]) == [], ran.stdout
    assert "one short text" in ran.stdout  # the query found the document


def test_a_damaged_trace_is_rebuilt_with_one_warning(tiny_model, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    expected = vectors(load(tiny_model, cache, monkeypatch))
    (saved,) = (cache / "traced").glob("*.pt")
    saved.write_bytes(b"half a trace")
    with caplog.at_level(logging.WARNING, logger="searcher"):
        rebuilt = load(tiny_model, cache, monkeypatch)
        again = load(tiny_model, cache, monkeypatch)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == [
        f"the traced model {saved} cannot be read: tracing the model again"
    ]
    assert isinstance(again.model, torch.jit.ScriptModule)
    assert np.array_equal(vectors(rebuilt), expected) and np.array_equal(vectors(again), expected)


def test_an_unwritable_cache_runs_the_model_eagerly_without_tracing_it(tiny_model, unwritable, monkeypatch):
    monkeypatch.setattr(searcher.embedder, "trace", lambda *_: pytest.fail("traced, with nowhere to keep the trace"))
    embedder = load(tiny_model, unwritable, monkeypatch)
    assert embedder.embed(MIXED).shape == (3, 32)
    assert not unwritable.exists()


def test_a_model_whose_trace_differs_runs_eagerly_and_is_not_traced_again(tiny_model, tmp_path, monkeypatch):
    traces = []
    monkeypatch.setattr(searcher.embedder, "trace", lambda *_: traces.append(1))  # None: the trace differed
    first = load(tiny_model, tmp_path / "cache", monkeypatch)
    second = load(tiny_model, tmp_path / "cache", monkeypatch)
    assert traces == [1]
    assert not isinstance(second.model, torch.jit.ScriptModule)
    assert np.array_equal(vectors(second), vectors(first))


class SkipsTheMask(torch.nn.Module):
    """A forward pass that decides on a tensor's value, as a model skipping its mask when nothing is padded."""

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if bool(mask.all()):
            return ids.float() + 1
        return (ids * mask).float()


def test_a_trace_that_differs_from_its_model_on_a_check_is_refused():
    padded = (torch.tensor([[5, 6, 7], [5, 6, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]))
    unpadded = (torch.tensor([[8, 9]]), torch.tensor([[1, 1]]))
    assert trace(SkipsTheMask(), padded, [padded]) is not None
    assert trace(SkipsTheMask(), padded, [padded, unpadded]) is None
