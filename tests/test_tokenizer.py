"""The tokenizer without transformers gives exactly what transformers' fast tokenizer gives, call for call."""

import json
from dataclasses import asdict

import pytest
from transformers import AutoTokenizer

from searcher import EmbeddingSettings
from searcher.embedder import Embedder
from searcher.errors import ModelError
from searcher.tokenizer import FastTokenizer, TokenizerState

TEXTS = [
    "How do I reset my password?",
    "Crème brûlée à la carte — a naïve café's ŒUVRE",
    "東京は日本の首都です。",
    "emoji 🙂👍, symbols © ™ ½ and a zero\u200bwidth space",
    "",
    "   \t\n ",
    "[CLS] special tokens [SEP] written in a text [MASK] [PAD]",
    "a" * 150 + " is one long word",
    "word " * 400,
]


@pytest.fixture(scope="module")
def reference(bundled_dir):
    """transformers' own tokenizer of the bundled model."""
    return AutoTokenizer.from_pretrained(bundled_dir)


@pytest.fixture(scope="module")
def fast(bundled_dir):
    """searcher's tokenizer, made as a process that finds the model's trace in the cache makes it."""
    state = TokenizerState.of(AutoTokenizer.from_pretrained(bundled_dir))
    return FastTokenizer(TokenizerState(**json.loads(json.dumps(asdict(state)))))


def test_truncated_ids_and_what_was_cut_are_transformers_own(fast, reference):
    expected = reference(TEXTS, truncation=True, max_length=12, return_overflowing_tokens=True)
    firsts, pieces = {}, {}
    for chunk, sample in zip(expected["input_ids"], expected["overflow_to_sample_mapping"], strict=True):
        firsts.setdefault(sample, chunk)
        pieces[sample] = pieces.get(sample, 0) + 1
    assert fast.ids(TEXTS, 12) == ([firsts[i] for i in range(len(TEXTS))], [pieces[i] > 1 for i in range(len(TEXTS))])


def test_whole_ids_and_offsets_are_transformers_own(fast, reference):
    assert fast.ids(TEXTS)[0] == reference(TEXTS)["input_ids"]
    bare = reference(TEXTS, add_special_tokens=False, return_offsets_mapping=True)
    assert fast.pieces(TEXTS) == (bare["input_ids"], bare["offset_mapping"])


@pytest.mark.parametrize("pair", [None, "", "and a second text, with its own offsets"])
def test_an_encoding_is_transformers_own(fast, reference, pair):
    for text in TEXTS[:8]:
        expected = reference(text, pair, return_token_type_ids=True, return_offsets_mapping=True)
        encoding = fast.encode(text, pair)
        assert encoding.ids == expected["input_ids"]
        assert encoding.tokens == reference.convert_ids_to_tokens(expected["input_ids"])
        assert encoding.segments == expected["token_type_ids"]
        assert encoding.mask == expected["attention_mask"]
        assert encoding.words == expected.word_ids()
        assert encoding.offsets == expected["offset_mapping"]


def test_settings_around_the_tokenizer_are_transformers_own(fast, reference):
    assert fast.special_tokens == reference.num_special_tokens_to_add(pair=False)
    assert (fast.state.max_length, fast.state.pad_id) == (reference.model_max_length, reference.pad_token_id)
    assert fast.state.takes_segments == ("token_type_ids" in reference.model_input_names)


def test_a_model_without_a_fast_tokenizer_is_refused(tiny_model_copy):
    (tiny_model_copy / "tokenizer.json").unlink()
    config = json.loads((tiny_model_copy / "tokenizer_config.json").read_text())
    python_only = {"tokenizer_class": "BertTokenizerLegacy"}  # transformers' tokenizer in Python: no offsets
    (tiny_model_copy / "tokenizer_config.json").write_text(json.dumps(config | python_only))
    with pytest.raises(ModelError, match="no fast tokenizer"):
        Embedder(EmbeddingSettings(str(tiny_model_copy), precision="fp32"), "cpu")


def test_the_tokenizers_own_settings_are_kept(tiny_model_copy):
    """transformers may change the Rust tokenizer after reading tokenizer_config.json (here: cased, cut on the
    left): what is kept is the tokenizer as transformers made it."""
    config = json.loads((tiny_model_copy / "tokenizer_config.json").read_text())
    changed = {"do_lower_case": False, "truncation_side": "left", "model_max_length": 64}
    (tiny_model_copy / "tokenizer_config.json").write_text(json.dumps(config | changed))
    reference = AutoTokenizer.from_pretrained(tiny_model_copy)
    fast = FastTokenizer(TokenizerState.of(AutoTokenizer.from_pretrained(tiny_model_copy)))
    expected = reference(TEXTS, truncation=True, max_length=12, return_overflowing_tokens=True)
    firsts = {}
    for chunk, sample in zip(expected["input_ids"], expected["overflow_to_sample_mapping"], strict=True):
        firsts.setdefault(sample, chunk)
    assert fast.ids(TEXTS, 12)[0] == [firsts[i] for i in range(len(TEXTS))]
    assert fast.pieces(TEXTS)[0] == reference(TEXTS, add_special_tokens=False)["input_ids"]
    assert fast.state.max_length == 64
