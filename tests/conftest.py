"""Shared fixtures: an isolated home and cache, and tiny random BERT models built from the bundled vocabulary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from searcher import EmbeddingSettings, Index

if TYPE_CHECKING:
    from searcher.embedder import Embedder

# torch, transformers and searcher.embedder are imported inside the fixtures that need them,
# so that tests which never embed (e.g. tests/test_store.py) don't pay for importing torch.

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One cache for the session, as a user has one: each model is traced once, and later Embedders load its
    trace (tests of the cache itself set a cache of their own)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch, session_cache):
    """No test reads or writes the user's indexes, caches, or the network."""
    monkeypatch.setenv("SEARCHER_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("SEARCHER_CACHE_DIR", str(session_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    from searcher.embedder import locate_model

    return locate_model("sentence-transformers/all-MiniLM-L6-v2")


def make_tiny_model(directory: Path, bundled: Path, seed: int = 0) -> Path:
    """A 4-layer, 32-wide random BERT that uses the bundled model's tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128
    )
    BertModel(config).save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy(bundled / name, directory / name)
    return directory


def declare_trained_pooling(directory: Path, mode: str) -> None:
    """Make DIRECTORY look like a sentence-transformers model trained with pooling MODE."""
    (directory / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, mode: True}))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, bundled_dir) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"), bundled_dir)


@pytest.fixture
def tiny_model_copy(tmp_path, bundled_dir) -> Path:
    """A tiny model of the test's own, free to be changed."""
    return make_tiny_model(tmp_path / "tiny-bert-copy", bundled_dir)


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model) -> Embedder:
    from searcher.embedder import Embedder

    return Embedder(EmbeddingSettings(str(tiny_model), precision="fp32"), "cpu")


@pytest.fixture(scope="session")
def bundled_embedder() -> Embedder:
    from searcher.embedder import Embedder

    return Embedder(EmbeddingSettings(precision="fp32"), "cpu")


@pytest.fixture
def tiny_index(tiny_embedder, tmp_path):
    """Makes an index at tmp_path/NAME on the tiny model, holding RECORDS."""

    def make(records, name="idx"):
        index = Index.create(tmp_path / name, embedder=tiny_embedder)
        index.add(records)
        return index

    return make
