"""Settings, in four parts that change for different reasons, loaded from defaults, a TOML file, then flags.

- `EmbeddingSettings`: how text becomes a vector, as asked for ("auto" and None are resolved by the model
  into the `EmbeddingSpec` an index records);
- `Runtime`: where and in what batches the work runs (never changes a vector);
- `SourceFormat`: how input files are read into records;
- `Settings`: the three above plus the structure of a new index and the home of named indexes.

TOML files and flags name settings flat (`layer = -2`, `--batch-size 8`); `Settings.of` sorts them into parts.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS = ("auto", "mean", "max", "cls")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
INDEX_TYPES = ("auto", "flat", "ivf", "ivfpq", "hnsw")
BATCH_SIZE = 64  # texts per forward pass, at most
BATCH_TOKENS = 16384  # padded tokens per forward pass, at most
WRITE_BUFFER_MB = 256  # new vectors a write holds in memory before merging them into the saved vector structure
LOG_DAYS = 90  # days the question log keeps a row, unless the index or `searcher serve --log-days` says otherwise


@dataclasses.dataclass(frozen=True)
class EmbeddingSettings:
    """How text becomes a vector, as asked for; "auto" and None let the model decide."""

    model: str | None = None  # None: the bundled model, or the one an existing index was built with
    layer: int | str = "auto"
    pooling: str = "auto"
    max_length: int | None = None
    precision: str = "auto"
    chunk: int | str = "auto"  # "auto": windows of the model's limit for longer texts; 0 ("none"): cut them
    chunk_overlap: int | None = None  # tokens shared by neighbouring windows; None: the default for the window

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", parse_layer(self.layer))
        object.__setattr__(self, "chunk", parse_chunk(self.chunk))
        if self.chunk_overlap is not None and (
            isinstance(self.chunk_overlap, bool) or not isinstance(self.chunk_overlap, int) or self.chunk_overlap < 0
        ):
            raise ConfigError(f"chunk_overlap must be a number of tokens (0 or more), got {self.chunk_overlap!r}")
        require_choice("pooling", self.pooling, POOLINGS)
        require_choice("precision", self.precision, PRECISIONS)
        if self.max_length is not None:
            require_positive("max_length", self.max_length)
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ConfigError("model must be a non-empty model id or directory")


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where and in what batches the model runs; none of it changes a vector."""

    device: str = "auto"
    batch_size: int = BATCH_SIZE
    batch_tokens: int = BATCH_TOKENS
    write_buffer_mb: int = WRITE_BUFFER_MB

    def __post_init__(self) -> None:
        require_choice("device", self.device, DEVICES)
        require_positive("batch_size", self.batch_size)
        require_positive("batch_tokens", self.batch_tokens)
        require_positive("write_buffer_mb", self.write_buffer_mb)


@dataclasses.dataclass(frozen=True)
class SourceFormat:
    """Which fields of an input record hold the text to embed and the document id (empty/None: guessed)."""

    text_fields: tuple[str, ...] = ()
    id_field: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_fields", tuple(self.text_fields))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything `searcher index` can be told; `configs/default.toml` spells out the defaults."""

    embedding: EmbeddingSettings = dataclasses.field(default_factory=EmbeddingSettings)
    runtime: Runtime = dataclasses.field(default_factory=Runtime)
    source: SourceFormat = dataclasses.field(default_factory=SourceFormat)
    index_type: str = "auto"  # a new index's vector structure: flat up to 50,000 vectors, then ivfpq
    home: str | None = None

    def __post_init__(self) -> None:
        require_choice("index type", self.index_type, INDEX_TYPES)

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """Settings from flat names (those of a TOML file); an unknown name is refused, naming the valid ones."""
        unknown = sorted(set(values) - set(SETTING_NAMES))
        if unknown:
            raise ConfigError(f"unknown setting {', '.join(unknown)}; valid settings: {', '.join(SETTING_NAMES)}")
        parts = {
            part: kind(**{name: values[name] for name in _names(kind) if name in values})
            for part, kind in PARTS.items()
        }
        return cls(**parts, **{name: values[name] for name in ("index_type", "home") if name in values})

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name."""
        values = {name: getattr(getattr(self, part), name) for part, kind in PARTS.items() for name in _names(kind)}
        return values | {"index_type": self.index_type, "home": self.home}

    def replace(self, **changes: Any) -> Settings:
        """A copy with the given flat-named values changed; None means "keep the current value"."""
        return Settings.of(**(self.flat() | {key: value for key, value in changes.items() if value is not None}))


PARTS = {"embedding": EmbeddingSettings, "runtime": Runtime, "source": SourceFormat}


def _names(kind: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(kind))


SETTING_NAMES = (*(name for kind in PARTS.values() for name in _names(kind)), "index_type", "home")


def parse_layer(value: int | str) -> int | str:
    """Accept "auto" or any integer (negative counts from the last layer), as int or text."""
    if isinstance(value, bool):
        raise ConfigError(f"invalid layer {value!r}: use 'auto' or an integer such as -1 or -2")
    if isinstance(value, int) or value == "auto":
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"invalid layer {value!r}: use 'auto' or an integer such as -1 or -2") from None


def parse_chunk(value: int | str) -> int | str:
    """Accept "auto", "none" (stored as 0: texts are cut to the model's limit) or a window length in tokens."""
    if value in ("auto", "none"):
        return 0 if value == "none" else value
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise ConfigError(f"invalid chunk {value!r}: use 'auto', 'none' or a number of tokens such as 128")
    return int(text)


def require_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"invalid {name} {value!r}: choose one of {', '.join(choices)}")


def require_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def load_settings(config_file: str | Path | None = None, **flags: Any) -> Settings:
    """Defaults, overridden by CONFIG_FILE's keys, overridden by every flag that is not None."""
    values = read_config_file(config_file) if config_file else {}
    try:
        settings = Settings.of(**values)
    except TypeError as error:  # a value of the wrong type that __post_init__ could not name
        raise ConfigError(f"{config_file}: {error}") from None
    return settings.replace(**flags)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The key/value pairs of a TOML settings file, with unknown keys refused."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    unknown = sorted(set(values) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {', '.join(unknown)}; valid settings: {', '.join(SETTING_NAMES)}")
    return values
