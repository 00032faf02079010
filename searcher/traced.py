"""The traced-model cache: a model's forward pass saved as TorchScript, so that later processes run it without
importing transformers (about 2.7 s of a 4.9 s `searcher index` of one document; loading a trace takes 0.1 s).

The first process to load a model in a precision traces the forward pass the embedder runs, keeps the trace
only if it gives the eager model's very numbers on batches of other shapes than the one it was traced on, and
saves it, with what the embedder must know without transformers, under the cache directory. Anything that
changes the trace (the model's files, precision, layer, device, the torch, transformers and tokenizers
versions) changes its key. The cache only saves time: a damaged entry is rebuilt, an unwritable cache
directory means running eagerly, and a model whose trace differs is remembered as one to run eagerly.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch

from .paths import cache_home

log = logging.getLogger("searcher")
FORMAT = 1  # of an entry: a new one makes every older entry unused
DETAILS_FILE = "searcher.json"  # what is kept with the trace, inside its file
T = TypeVar("T")
Batch = tuple[torch.Tensor, ...]


class TraceCache:
    """The cache entry of one model as the embedder runs it: its trace and details, or a mark that it has none."""

    def __init__(self, key: dict[str, str]) -> None:
        versions = {name: importlib.metadata.version(name) for name in ("torch", "transformers", "tokenizers")}
        text = json.dumps({"format": FORMAT} | key | versions, sort_keys=True)
        name = hashlib.sha256(text.encode()).hexdigest()[:32]
        self.directory = cache_home() / "traced"
        self.path = self.directory / f"{name}.pt"
        self.eager_mark = self.directory / f"{name}.eager"  # its trace differed from the model: run it eagerly

    @property
    def runs_eagerly(self) -> bool:
        return self.eager_mark.exists()

    def load(self, device: torch.device, read: Callable[[dict], T]) -> tuple[torch.jit.ScriptModule, T] | None:
        """The saved trace, on DEVICE, and its details as READ makes them; None if there is none, or if it cannot
        be read (then it is rebuilt, with a warning)."""
        if not self.path.is_file():
            return None
        files = {DETAILS_FILE: ""}
        try:
            with _no_deprecation_warnings():
                module = torch.jit.load(str(self.path), map_location=device, _extra_files=files)
            return module, read(json.loads(files[DETAILS_FILE]))
        except Exception as error:  # torch, json and READ refuse a damaged file in many classes
            log.warning("the traced model %s cannot be read: tracing the model again", self.path)
            log.debug("reading %s: %s", self.path, error)
            return None

    def writable(self) -> bool:
        """Whether a trace can be saved: tracing costs more than it saves when nothing is kept."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.directory, os.W_OK)

    def save(self, module: torch.jit.ScriptModule, details: dict) -> None:
        """MODULE with DETAILS, written whole or not at all (a reader never sees half a file)."""
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            with temporary.open("wb") as handle, _no_deprecation_warnings():
                torch.jit.save(module, handle, _extra_files={DETAILS_FILE: json.dumps(details)})
            os.replace(temporary, self.path)
        except OSError:
            temporary.unlink(missing_ok=True)

    def mark_eager(self) -> None:
        try:
            self.eager_mark.touch()
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # then the next process tries tracing again


@contextmanager
def _no_deprecation_warnings() -> Iterator[None]:
    """TorchScript is deprecated in favour of torch.export, whose programs took 1.6 s to load where a trace takes
    0.1 s: its warnings say nothing new."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def trace(forward: torch.nn.Module, example: Batch, checks: Sequence[Batch]) -> torch.jit.ScriptModule | None:
    """FORWARD traced on EXAMPLE, if the trace gives exactly FORWARD's output on each of CHECKS; else None.

    A trace records the operations that one call ran: Python decisions on tensor values (a model skipping its
    attention mask when there is no padding, say) are fixed as they went then. EXAMPLE should therefore be
    padded, and CHECKS of other shapes, with padding and without.
    """
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings of such decisions: the checks decide
            traced = torch.jit.trace(forward, example, check_trace=False)
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            same = all(torch.equal(traced(*batch), forward(*batch)) for batch in checks)
    except Exception as error:  # tracing fails in many ways: unsupported operations, outputs of other types
        log.debug("cannot trace the model: %s", error)
        return None
    return traced if same else None
