"""What an index records about itself: the embedding spec its vectors were made with, and the rest of its manifest.

The manifest is stored as key/value rows in docs.sqlite (see `store`); this module is the one place that
knows its keys and the defaults of indexes written by older versions of searcher.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from .config import EmbeddingSettings

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

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> EmbeddingSpec:
        values = OLDER_INDEX_DEFAULTS | manifest
        return cls(**{name: values[name] for name in SPEC_KEYS})

    def settings(self) -> EmbeddingSettings:
        """The request that loads this spec's model the same way again (its fingerprint is checked after)."""
        return EmbeddingSettings(self.model, self.layer, self.pooling, self.max_length, self.precision)

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
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Manifest:
        values = OLDER_INDEX_DEFAULTS | stored
        return cls(
            spec=EmbeddingSpec.from_manifest(values),
            dimension=values["dimension"],
            index_type=values["index_type"],
            search_params=values["search_params"],
            documents=values.get("documents", 0),
            generation=values["generation"],
            vectors_generation=values["vectors_generation"],
            thresholds=values["thresholds"],
            calibration=values["calibration"],
            raw=values,
        )

    def threshold(self, mode: str) -> float | None:
        """The calibrated "good match" score for MODE, if one was calibrated."""
        return self.thresholds.get(mode)

    def as_dict(self) -> dict[str, Any]:
        """Every key, as stored (older indexes' missing keys filled in)."""
        return dict(self.raw)


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
