"""Token ids and offsets from a model's fast (Rust) tokenizer, without importing transformers.

A transformers fast tokenizer wraps a `tokenizers.Tokenizer`. `FastTokenizer` calls that same object the way
transformers does (truncation set for each call, no padding, special tokens in a text split or not as the
model's tokenizer says), so ids, offsets and special tokens are transformers' own. What transformers keeps
beside it (the tokenizer's limit, the pad token, whether the model takes token type ids) is read once from
the transformers tokenizer into a `TokenizerState`, which is kept with the traced model (see `traced`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import tokenizers

Offsets = list[tuple[int, int]]  # each token's [start, end) in characters of its own text


@dataclass(frozen=True)
class Encoding:
    """One text (or text pair) as the model sees it, token by token."""

    tokens: list[str]
    ids: list[int]
    segments: list[int]
    mask: list[int]
    words: list[int | None]  # index of the word each token belongs to; None for special tokens
    offsets: Offsets  # character span of each token in its own text


@dataclass(frozen=True)
class TokenizerState:
    """What a `FastTokenizer` is made of: the Rust tokenizer, serialized, and transformers' settings around it."""

    backend: str  # the `tokenizers.Tokenizer` as JSON, in tokenizer.json's format
    max_length: int  # the tokenizer's own limit (transformers' model_max_length)
    pad_id: int
    takes_segments: bool  # whether the model takes token type ids (transformers' model_input_names)
    truncation_side: str
    split_special_tokens: bool  # whether "[SEP]" written in a text is split like any text, or is the token

    @classmethod
    def of(cls, tokenizer: Any) -> TokenizerState:
        """The state of a transformers fast tokenizer (its attributes only: transformers is not imported here)."""
        return cls(
            backend=tokenizer.backend_tokenizer.to_str(),
            max_length=int(tokenizer.model_max_length),
            pad_id=tokenizer.pad_token_id or 0,
            takes_segments="token_type_ids" in tokenizer.model_input_names,
            truncation_side=tokenizer.truncation_side,
            split_special_tokens=bool(tokenizer.split_special_tokens),
        )


class FastTokenizer:
    """The tokenizer calls the embedder makes, each as transformers' fast tokenizer makes it."""

    def __init__(self, state: TokenizerState) -> None:
        self.state = state
        self._backend = tokenizers.Tokenizer.from_str(state.backend)
        self._backend.no_padding()  # the embedder pads batches itself
        self._backend.encode_special_tokens = state.split_special_tokens
        # Truncation is set for each call, and a Rust tokenizer refuses to be changed while another thread uses
        # it ("Already borrowed"): one call at a time.
        self._lock = threading.Lock()

    @property
    def special_tokens(self) -> int:
        """How many special tokens ([CLS], [SEP]) go around a single text."""
        return self._backend.num_special_tokens_to_add(False)

    def ids(self, texts: Sequence[str], max_length: int | None = None) -> tuple[list[list[int]], list[bool]]:
        """Each text's token ids with the special tokens around them, cut to MAX_LENGTH if given; and which
        texts were cut."""
        encodings = self._encode(texts, special=True, max_length=max_length)
        return [encoding.ids for encoding in encodings], [bool(encoding.overflowing) for encoding in encodings]

    def pieces(self, texts: Sequence[str]) -> tuple[list[list[int]], list[Offsets]]:
        """Each text's token ids without special tokens, uncut, and each token's span in the text."""
        encodings = self._encode(texts, special=False)
        return [encoding.ids for encoding in encodings], [encoding.offsets for encoding in encodings]

    def encode(self, text: str, pair: str | None = None) -> Encoding:
        """TEXT (and PAIR) exactly as the model sees it, uncut."""
        (encoding,) = self._encode([(text, pair) if pair else text], special=True)  # transformers: "" is no pair
        return Encoding(
            tokens=[cast(str, self._backend.id_to_token(token)) for token in encoding.ids],  # its own ids: all known
            ids=encoding.ids,
            segments=encoding.type_ids,
            mask=encoding.attention_mask,
            words=encoding.word_ids,
            offsets=encoding.offsets,
        )

    def _encode(
        self, inputs: Sequence[str | tuple[str, str]], special: bool, max_length: int | None = None
    ) -> list[tokenizers.Encoding]:
        with self._lock:
            if max_length is None:
                self._backend.no_truncation()
            else:  # as transformers' truncation=True: the longest of a pair first, on the tokenizer's side
                self._backend.enable_truncation(
                    max_length, stride=0, strategy="longest_first", direction=self.state.truncation_side
                )
            return self._backend.encode_batch(list(inputs), add_special_tokens=special)
