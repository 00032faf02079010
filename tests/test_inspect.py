"""Looking inside the embeddings: the walkthrough's steps through the API and the CLI."""

import json
import struct
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from searcher import EmbeddingSettings, Index, Record, load_settings
from searcher.cli import app
from searcher.embedder import Embedder
from searcher.errors import ConfigError, InputTooLongError
from searcher.inspect import Inspector, combine_layers, merge_subwords

BANK = "After stealing money from the bank vault, the bank robber was seen fishing on the Mississippi river bank."
BANK_IDS = [
    101,
    2044,
    11065,
    2769,
    2013,
    1996,
    2924,
    11632,
    1010,
    1996,
    2924,
    27307,
    2001,
    2464,
    5645,
    2006,
    1996,
    5900,
    2314,
    2924,
    1012,
    102,
]

runner = CliRunner()


@pytest.fixture(scope="module")
def bundled(bundled_embedder):
    return Inspector(bundled_embedder)


@pytest.fixture(scope="module")
def tiny(tiny_embedder):
    return Inspector(tiny_embedder)


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_bank_sentence_ids_are_exact(bundled):
    view = bundled.tokens(BANK)
    assert view.ids == BANK_IDS
    assert (view.tokens[0], view.tokens[6], view.tokens[-1]) == ("[CLS]", "bank", "[SEP]")
    assert view.segments == [0] * len(BANK_IDS) and view.mask == [1] * len(BANK_IDS)


def test_pair_segments_are_zero_then_one(tiny):
    view = tiny.tokens("hello there", pair="general kenobi")
    assert view.tokens == ["[CLS]", "hello", "there", "[SEP]", "general", "ken", "##ob", "##i", "[SEP]"]
    assert view.segments == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_hidden_states_are_layer_major(bundled, tiny):
    assert bundled.hidden_states(BANK).shape == (7, len(BANK_IDS), 384)
    assert tiny.hidden_states("one two").shape == (5, 4, 32)


def test_strategies_combine_the_last_four_layers(tiny):
    states = tiny.hidden_states("word vectors")
    assert combine_layers(states, "sum4").shape == (4, 32)
    concat = combine_layers(states, "concat4")
    assert concat.shape == (4, 128)
    np.testing.assert_allclose(concat[:, :32], states[-1])
    np.testing.assert_allclose(concat[:, 96:], states[-4])
    np.testing.assert_allclose(combine_layers(states, "mean4") * 4, combine_layers(states, "sum4"), rtol=1e-5)
    np.testing.assert_array_equal(combine_layers(states, "layer:-2"), states[-2])


@pytest.mark.parametrize(
    ("strategy", "message"), [("sum5", "choose one of"), ("layer:9", "does not exist"), ("layer:x", "invalid layer")]
)
def test_invalid_strategies_are_named(tiny, strategy, message):
    with pytest.raises(ConfigError, match=message):
        combine_layers(tiny.hidden_states("text"), strategy)


def test_last_four_needs_four_layers():
    with pytest.raises(ConfigError, match="needs 4 layers.*has 2"):
        combine_layers(np.zeros((3, 2, 8)), "sum4")


def test_subword_pieces_merge_back_into_words(tiny):
    (word, rest) = tiny.word_vectors("embeddings rock", strategy="layer:-1", subword="mean")
    assert (word.word, word.pieces, word.positions) == ("embeddings", ["em", "##bed", "##ding", "##s"], [1, 2, 3, 4])
    tokens = tiny.hidden_states("embeddings rock")[-1]
    np.testing.assert_allclose(word.vector, tokens[1:5].mean(axis=0), rtol=1e-5)
    first = tiny.word_vectors("embeddings rock", strategy="layer:-1", subword="first")[0]
    np.testing.assert_allclose(first.vector, tokens[1])
    np.testing.assert_allclose(merge_subwords(tokens[1:5], "sum"), tokens[1:5].sum(axis=0))
    with pytest.raises(ConfigError, match="first, mean, sum"):
        merge_subwords(tokens, "max")


def test_words_keep_their_original_spelling(bundled):
    words = [w.word for w in bundled.word_vectors(BANK)]
    assert words[16] == "Mississippi" and len(words) == 20


def test_money_banks_are_closer_than_the_river_bank(bundled):
    report = bundled.context_similarity(BANK, "bank", strategy="sum4")
    assert report.positions == [6, 10, 19]
    assert len(report.layers) == 7
    cosine = {(pair.a, pair.b): pair.cosine for pair in report.strategy_pairs}
    assert cosine[(6, 10)] > cosine[(6, 19)]
    assert cosine[(6, 10)] > cosine[(10, 19)]


def test_context_needs_two_occurrences(tiny):
    with pytest.raises(ConfigError, match="'vault' occurs 1 time"):
        tiny.context_similarity(BANK, "vault")


def test_long_input_is_refused_not_truncated(tiny):
    with pytest.raises(InputTooLongError, match="at most 128"):
        tiny.hidden_states("word " * 200)


def test_feature_stats(tiny):
    stats = tiny.feature_stats(BANK, token=6, layer=-2)
    assert (stats.token, stats.position, stats.layer, len(stats.values)) == ("bank", 6, 3, 32)
    assert stats.minimum <= stats.percentiles[1] <= stats.percentiles[50] <= stats.percentiles[99] <= stats.maximum
    with pytest.raises(ConfigError, match="tokens 0 to 21"):
        tiny.feature_stats(BANK, token=22, layer=0)


def test_tokens_command_json():
    result = run("tokens", BANK, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ids"] == BANK_IDS


def test_context_command_json_and_plot(tiny_model, tmp_path):
    plot = tmp_path / "bank.png"
    result = run("context", BANK, "--word", "bank", "--model", tiny_model, "--plot", plot, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["positions"] == [6, 10, 19]
    assert [layer["layer"] for layer in report["layers"]] == [0, 1, 2, 3, 4]
    assert [(p["a"], p["b"]) for p in report["layers"][0]["pairs"]] == [(6, 10), (6, 19), (10, 19)]
    assert report["strategy"]["name"] == "sum4" and len(report["strategy"]["pairs"]) == 3
    width, height = png_size(plot)
    assert width > 300 and height > 200


def test_context_table(tiny_model):
    result = run("context", BANK, "--word", "bank", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    assert "bank@6 vs @10" in result.stdout and "0 (embeddings)" in result.stdout


def test_hist_command_writes_a_png(tiny_model, tmp_path):
    plot = tmp_path / "hist.png"
    result = run("hist", BANK, "--token", 6, "--layer", 2, "--model", tiny_model, "--plot", plot, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["token"], summary["layer"], summary["features"]) == ("bank", 2, 32)
    assert png_size(plot)[0] > 300


def test_plot_without_matplotlib_is_one_clear_error(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run("hist", BANK, "--token", 6, "--model", tiny_model, "--plot", tmp_path / "h.png")
    assert result.exit_code == 1
    assert "pip install 'searcher[plot]'" in result.stderr


def test_words_command_json_and_per_token_view(tiny_model):
    result = run("words", "embeddings rock", "--model", tiny_model, "--strategy", "concat4", "--dims", 3, "--json")
    assert result.exit_code == 0, result.output
    words = json.loads(result.stdout)["words"]
    assert [w["word"] for w in words] == ["embeddings", "rock"]
    assert words[0]["pieces"] == ["em", "##bed", "##ding", "##s"] and len(words[0]["vector"]) == 3
    per_token = json.loads(run("words", "rock", "--model", tiny_model, "--tokens", "--json").stdout)["tokens"]
    assert [t["token"] for t in per_token] == ["[CLS]", "rock", "[SEP]"] and len(per_token[0]["vector"]) == 32


def test_embed_matches_the_indexer(tiny_model, tmp_path):
    indexer = Embedder(EmbeddingSettings(model=str(tiny_model)), "cpu")  # default precision, as `index` uses
    result = run("embed", "reset my password", "cancel billing", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    np.testing.assert_allclose(
        [line["vector"] for line in lines], indexer.embed(["reset my password", "cancel billing"]), atol=1e-6
    )
    out = tmp_path / "v.npy"
    assert run("embed", "--stdin", "--model", tiny_model, "--out", out, input="one\n\ntwo\n").exit_code == 0
    np.testing.assert_allclose(np.load(out), indexer.embed(["one", "two"]), atol=1e-6)


def test_embed_with_an_index_uses_its_settings(tiny_model, tmp_path):
    with Index.create(
        tmp_path / "maxpool", load_settings(model=str(tiny_model), layer=1, pooling="max", device="cpu")
    ) as index:
        index.add([Record("a", "the text")])
        precision = index.manifest.spec.precision  # auto: bf16 or fp32, by CPU
    result = run("embed", "the text", "--index", tmp_path / "maxpool")
    assert result.exit_code == 0, result.output
    expected = Embedder(EmbeddingSettings(str(tiny_model), layer=1, pooling="max", precision=precision), "cpu").embed(
        ["the text"]
    )
    np.testing.assert_allclose(json.loads(result.stdout)["vector"], expected[0], atol=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("embed",), "nothing to embed"),
        (("embed", "x", "--format", "npy"), "--format npy needs --out"),
        (("embed", "x", "--format", "csv"), "choose npy or jsonl"),
        (("context", BANK, "--word", "vault"), "occurs 1 time"),
        (("words", "x", "--strategy", "sum9"), "choose one of sum4, concat4, mean4, layer:N"),
        (("hist", "short", "--token", 40), "tokens 0 to 2"),
    ],
)
def test_inspection_errors_are_one_line(tiny_model, args, message):
    result = run(*args, "--model", tiny_model)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_module_functions_load_the_named_model_once(tiny_model):
    import searcher.inspect as inspect

    model = str(tiny_model)
    assert inspect.tokens("hello world", model=model).tokens == ["[CLS]", "hello", "world", "[SEP]"]
    assert inspect.hidden_states("hello world", model=model).shape == (5, 4, 32)
    assert [w.word for w in inspect.word_vectors("embeddings rock", strategy="layer:-1", model=model)] == [
        "embeddings",
        "rock",
    ]
    report = inspect.context_similarity("bank and bank", "bank", strategy="layer:-1", model=model)
    assert report.positions == [1, 3] and len(report.layers) == 5
    assert inspect.inspector(model) is inspect.inspector(model)
