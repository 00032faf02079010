"""What an index records about itself: the embedding spec its vectors were made with, and the rest of its manifest.

The manifest is stored as key/value rows in docs.sqlite (see `store`); this module is the one place that
knows its keys and the defaults of indexes written by older versions of searcher.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from .config import INDEX_TYPES, LOG_DAYS, POOLINGS, PRECISIONS, EmbeddingSettings
from .errors import ConfigError, IndexCorruptError
from .vectors import check_search_params

# Keys that older indexes lack, with the value they implicitly had.
OLDER_INDEX_DEFAULTS: dict[str, Any] = {
    "precision": "fp32",  # written before precision was recorded: always fp32 then
    "index_type": "auto",
    "search_params": {},
    "generation": 0,
    "vectors_generation": None,
    "thresholds": {},
    "calibration": {},
    "format": 1,
    "documents": 0,
    "chunk": 0,  # written before passages: every text was one vector, cut to the model's limit
    "chunk_overlap": 0,
    "log_queries": False,  # the question log is opt-in (see `querylog`)
    "log_days": LOG_DAYS,
}


@dataclass(frozen=True)
class EmbeddingSpec:
    """Everything that decides the vector of a text; an index's queries must be embedded with an equal spec."""

    model: str
    fingerprint: str  # sha256 over the model's files: another copy of "the same" model may embed otherwise
    layer: int
    pooling: str
    max_length: int
    precision: str
    chunk: int  # tokens per passage of a longer document's text, title included; 0: texts are cut instead
    chunk_overlap: int  # tokens neighbouring passages share

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> EmbeddingSpec:
        values = OLDER_INDEX_DEFAULTS | manifest
        return cls(**{name: values[name] for name in SPEC_KEYS})

    def settings(self) -> EmbeddingSettings:
        """The request that loads this spec's model the same way again (its fingerprint is checked after)."""
        return EmbeddingSettings(
            self.model, self.layer, self.pooling, self.max_length, self.precision, self.chunk, self.chunk_overlap
        )

    def differences(self, other: EmbeddingSpec) -> list[str]:
        """Names of the fields in which OTHER differs from this spec."""
        return [name for name in SPEC_KEYS if getattr(self, name) != getattr(other, name)]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SPEC_KEYS = tuple(spec_field.name for spec_field in dataclasses.fields(EmbeddingSpec))


@dataclass(frozen=True)
class Manifest:
    """An index's manifest, typed; `raw` keeps every stored key, including ones a newer searcher added."""

    spec: EmbeddingSpec
    dimension: int
    index_type: str
    search_params: dict[str, int]
    documents: int
    generation: int  # raised by every write transaction
    vectors_generation: int | None  # the generation the FAISS file on disk reflects
    thresholds: dict[str, float] = field(default_factory=dict)  # per search mode: under it, "no good match"
    calibration: dict[str, Any] = field(default_factory=dict)
    log_queries: bool = False  # searches are written to the question log unless a caller says otherwise
    log_days: int = LOG_DAYS  # how long the question log keeps a row
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, stored: dict[str, Any], name: str) -> Manifest:
        """The manifest of index NAME as stored, refused with every problem it has if it cannot be used."""
        values = OLDER_INDEX_DEFAULTS | stored
        problems = manifest_problems(values)
        if problems:
            raise IndexCorruptError(f"index {name!r} has a damaged manifest: {'; '.join(problems)}")
        return cls(
            spec=EmbeddingSpec.from_manifest(values),
            dimension=values["dimension"],
            index_type=values["index_type"],
            search_params=values["search_params"],
            documents=values["documents"],
            generation=values["generation"],
            vectors_generation=values["vectors_generation"],
            thresholds=values["thresholds"],
            calibration=values["calibration"],
            log_queries=values["log_queries"],
            log_days=values["log_days"],
            raw=values,
        )

    def threshold(self, mode: str) -> float | None:
        """The calibrated "good match" score for MODE, if one was calibrated."""
        return self.thresholds.get(mode)

    @property
    def not_covered(self) -> float | None:
        """The inbox's "not covered" cut, stored by a calibration of dense search (see `inbox`)."""
        cut = self.calibration.get("dense", {}).get("not_covered")
        return cut if isinstance(cut, int | float) else None

    def as_dict(self) -> dict[str, Any]:
        """Every key, as stored (older indexes' missing keys filled in)."""
        return dict(self.raw)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: Any) -> bool:
    return _integer(value) and value > 0


def _choice(choices: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return lambda value: value in choices, f"is not one of {', '.join(choices)}"


def _mapping(value: Any) -> bool:
    return isinstance(value, dict)


# What each key's value must be, and what it is not when it isn't; a key without a default must be there.
VALID_VALUES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (lambda value: isinstance(value, str) and bool(value.strip()), "is not a model id or directory"),
    "fingerprint": (lambda value: isinstance(value, str), "is not a fingerprint"),
    "layer": (_integer, "is not an integer"),
    "pooling": _choice(tuple(name for name in POOLINGS if name != "auto")),
    "max_length": (_positive, "is not a positive integer"),
    "precision": _choice(tuple(name for name in PRECISIONS if name != "auto")),
    "dimension": (_positive, "is not a positive integer"),
    "index_type": _choice(INDEX_TYPES),
    "search_params": (_mapping, "is not an object"),
    "documents": (lambda value: _integer(value) and value >= 0, "is not a count"),
    "generation": (lambda value: _integer(value) and value >= 0, "is not a count"),
    "vectors_generation": (lambda value: value is None or _integer(value), "is not a count"),
    "thresholds": (
        lambda value: (
            _mapping(value) and all(isinstance(score, int | float) and math.isfinite(score) for score in value.values())
        ),
        "is not an object of scores",
    ),
    "calibration": (_mapping, "is not an object"),
    "format": (_integer, "is not an integer"),
    "chunk": (lambda value: _integer(value) and value >= 0, "is not a number of tokens"),
    "chunk_overlap": (lambda value: _integer(value) and value >= 0, "is not a number of tokens"),
    "log_queries": (lambda value: isinstance(value, bool), "is not true or false"),
    "log_days": (_positive, "is not a positive integer"),
}


def manifest_problems(values: dict[str, Any]) -> list[str]:
    """What makes stored manifest VALUES (older indexes' defaults filled in) unusable: missing keys, values of
    the wrong kind."""
    problems = []
    for key, (valid, what) in VALID_VALUES.items():
        if key not in values:
            problems.append(f"{key} is missing")
        elif not valid(values[key]):
            problems.append(f"{key} {values[key]!r} {what}")
    if _mapping(values.get("search_params")):
        try:
            check_search_params(values["search_params"])
        except ConfigError as error:
            problems.append(f"search_params: {error}")
    return problems


def new_manifest(spec: EmbeddingSpec, dimension: int, index_type: str, store_format: int) -> dict[str, Any]:
    """The manifest of a new, empty index."""
    return spec.as_dict() | {
        "index_type": index_type,
        "search_params": {},
        "dimension": dimension,
        "format": store_format,
        "normalized": True,
        "metric": "cosine",
        "searcher_version": version("searcher"),
        "documents": 0,
        "generation": 0,
        "vectors_generation": 0,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
