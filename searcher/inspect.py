"""Look inside the embeddings: tokens, hidden states, word vectors and how context changes them.

Every step goes through the engine's `Embedder` (its tokenizer call and forward pass); this module only
rearranges the hidden states it returns.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    from .embedder import Embedder
    from .tokenizer import Encoding

STRATEGIES = ("sum4", "concat4", "mean4", "layer:N")
SUBWORD_MERGES = ("first", "mean", "sum")
PERCENTILES = (1, 25, 50, 75, 99)


@dataclass(frozen=True)
class TokenView:
    """WordPiece tokens with [CLS]/[SEP], vocabulary ids, segment (token type) ids and attention mask."""

    tokens: list[str]
    ids: list[int]
    segments: list[int]
    mask: list[int]


@dataclass(frozen=True)
class WordVector:
    """A word of the text, the tokens it was split into, and their merged vector."""

    word: str
    pieces: list[str]
    positions: list[int]
    vector: np.ndarray


@dataclass(frozen=True)
class PairCosine:
    a: int
    b: int
    cosine: float


@dataclass(frozen=True)
class ContextReport:
    """Cosine similarity between every two occurrences of a word, layer by layer and for one strategy."""

    word: str
    positions: list[int]
    layers: list[list[PairCosine]]  # index = layer, 0 = embeddings
    strategy: str
    strategy_pairs: list[PairCosine]


@dataclass(frozen=True)
class FeatureStats:
    """The feature values of one token at one layer, with summary statistics."""

    token: str
    position: int
    layer: int
    values: np.ndarray
    percentiles: dict[int, float]

    @property
    def minimum(self) -> float:
        return float(self.values.min())

    @property
    def maximum(self) -> float:
        return float(self.values.max())


def combine_layers(states: np.ndarray, strategy: str) -> np.ndarray:
    """Token vectors from hidden STATES (layers + 1, tokens, hidden) by sum4, concat4, mean4 or layer:N."""
    if strategy.startswith("layer:"):
        return states[_layer_index(states, strategy.removeprefix("layer:"))]
    if strategy not in ("sum4", "concat4", "mean4"):
        raise ConfigError(f"invalid strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if len(states) < 5:
        raise ConfigError(
            f"strategy {strategy} needs 4 layers after the embeddings; this model has {len(states) - 1}: use layer:N"
        )
    last_four = states[-1:-5:-1]  # last layer first, as in the walkthrough's concatenation
    if strategy == "sum4":
        return last_four.sum(axis=0)
    if strategy == "mean4":
        return last_four.mean(axis=0)
    return np.concatenate(list(last_four), axis=-1)


def _layer_index(states: np.ndarray, text: str | int) -> int:
    layers = len(states) - 1
    try:
        layer = int(text)
    except ValueError:
        raise ConfigError(
            f"invalid layer {text!r}: use an integer from 0 (embeddings) to {layers}, or negative from the end"
        ) from None
    if not -(layers + 1) <= layer <= layers:
        raise ConfigError(
            f"layer {layer} does not exist: layers are 0 (embeddings) to {layers}, or {-(layers + 1)} to -1"
        )
    return layer % (layers + 1)


def merge_subwords(vectors: np.ndarray, merge: str) -> np.ndarray:
    """One vector from the vectors of a word's pieces (pieces, dim)."""
    if merge == "first":
        return vectors[0]
    if merge == "mean":
        return vectors.mean(axis=0)
    if merge == "sum":
        return vectors.sum(axis=0)
    raise ConfigError(f"invalid subword merge {merge!r}: choose one of {', '.join(SUBWORD_MERGES)}")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def _word_spans(encoding: Encoding) -> list[list[int]]:
    """Token positions of each word, in order; special tokens belong to no word."""
    spans: dict[int, list[int]] = {}
    for position, word in enumerate(encoding.words):
        if word is not None:
            spans.setdefault(word, []).append(position)
    return list(spans.values())


def _pair_cosines(vectors: list[np.ndarray], positions: list[int]) -> list[PairCosine]:
    return [
        PairCosine(positions[i], positions[j], cosine(vectors[i], vectors[j]))
        for i, j in itertools.combinations(range(len(positions)), 2)
    ]


class Inspector:
    """The walkthrough's steps on one model: tokens, hidden states, word vectors, context, feature histograms."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def tokens(self, text: str, pair: str | None = None) -> TokenView:
        encoding = self.embedder.encode(text, pair)
        return TokenView(encoding.tokens, encoding.ids, encoding.segments, encoding.mask)

    def hidden_states(self, text: str) -> np.ndarray:
        """Shape (layers + 1, tokens, hidden): layer-major, as the walkthrough permutes them."""
        return self.embedder.hidden_states(self.embedder.encode(text))

    def token_vectors(self, text: str, strategy: str = "sum4") -> list[tuple[str, np.ndarray]]:
        """(token, vector) for every token, [CLS] and [SEP] included."""
        encoding = self.embedder.encode(text)
        vectors = combine_layers(self.embedder.hidden_states(encoding), strategy)
        return list(zip(encoding.tokens, vectors, strict=True))

    def word_vectors(self, text: str, strategy: str = "sum4", subword: str = "mean") -> list[WordVector]:
        encoding = self.embedder.encode(text)
        vectors = combine_layers(self.embedder.hidden_states(encoding), strategy)
        return [
            self._word(text, encoding, span, merge_subwords(vectors[span], subword)) for span in _word_spans(encoding)
        ]

    def context_similarity(self, text: str, word: str, strategy: str = "sum4", subword: str = "mean") -> ContextReport:
        """How alike the occurrences of WORD are at each layer: low cosine = strongly contextualized."""
        encoding = self.embedder.encode(text)
        states = self.embedder.hidden_states(encoding)
        spans = [span for span in _word_spans(encoding) if self._text_of(text, encoding, span).lower() == word.lower()]
        if len(spans) < 2:
            words = sorted({self._text_of(text, encoding, span) for span in _word_spans(encoding)})
            raise ConfigError(
                f"{word!r} occurs {len(spans)} time(s) in the text; it needs two or more "
                f"(words: {', '.join(words[:20])})"
            )
        positions = [span[0] for span in spans]
        layers = [
            _pair_cosines([merge_subwords(layer[span], subword) for span in spans], positions) for layer in states
        ]
        combined = combine_layers(states, strategy)
        chosen = _pair_cosines([merge_subwords(combined[span], subword) for span in spans], positions)
        return ContextReport(word, positions, layers, strategy, chosen)

    def feature_stats(self, text: str, token: int, layer: int) -> FeatureStats:
        encoding = self.embedder.encode(text)
        if not 0 <= token < len(encoding.ids):
            raise ConfigError(f"token {token} does not exist: the text has tokens 0 to {len(encoding.ids) - 1}")
        states = self.embedder.hidden_states(encoding)
        resolved = _layer_index(states, layer)
        values = states[resolved, token]
        percentiles = dict(zip(PERCENTILES, map(float, np.percentile(values, PERCENTILES)), strict=True))
        return FeatureStats(encoding.tokens[token], token, resolved, values, percentiles)

    @staticmethod
    def _text_of(text: str, encoding: Encoding, span: list[int]) -> str:
        return text[encoding.offsets[span[0]][0] : encoding.offsets[span[-1]][1]]

    def _word(self, text: str, encoding: Encoding, span: list[int], vector: np.ndarray) -> WordVector:
        return WordVector(self._text_of(text, encoding, span), [encoding.tokens[i] for i in span], span, vector)


@functools.lru_cache(maxsize=2)
def inspector(model: str | None = None, device: str = "auto") -> Inspector:
    """A shared Inspector per model, so the module-level functions load each model once."""
    from .config import EmbeddingSettings
    from .embedder import Embedder  # torch is imported only when a model is loaded

    return Inspector(Embedder(EmbeddingSettings(model=model), device))


def tokens(text: str, pair: str | None = None, model: str | None = None) -> TokenView:
    return inspector(model).tokens(text, pair)


def hidden_states(text: str, model: str | None = None) -> np.ndarray:
    return inspector(model).hidden_states(text)


def word_vectors(
    text: str, strategy: str = "sum4", subword: str = "mean", model: str | None = None
) -> list[WordVector]:
    return inspector(model).word_vectors(text, strategy, subword)


def context_similarity(text: str, word: str, strategy: str = "sum4", model: str | None = None) -> ContextReport:
    return inspector(model).context_similarity(text, word, strategy)
