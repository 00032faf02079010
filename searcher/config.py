"""Settings: one frozen dataclass, loaded from defaults, then a TOML file, then flags."""

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


@dataclasses.dataclass(frozen=True)
class Settings:
    """How documents are read and embedded; `configs/default.toml` spells out these defaults."""

    model: str | None = None  # None: the bundled model, or the one an existing index was built with
    layer: int | str = "auto"
    pooling: str = "auto"
    max_length: int | None = None
    batch_size: int = BATCH_SIZE
    batch_tokens: int = BATCH_TOKENS
    device: str = "auto"
    precision: str = "auto"
    index_type: str = "auto"  # flat up to 50,000 vectors, then ivfpq
    text_fields: tuple[str, ...] = ()
    id_field: str | None = None
    home: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", parse_layer(self.layer))
        object.__setattr__(self, "text_fields", tuple(self.text_fields))
        if self.pooling not in POOLINGS:
            raise ConfigError(f"invalid pooling {self.pooling!r}: choose one of {', '.join(POOLINGS)}")
        if self.device not in DEVICES:
            raise ConfigError(f"invalid device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"invalid precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.index_type not in INDEX_TYPES:
            raise ConfigError(f"invalid index type {self.index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
        _require_positive("batch_size", self.batch_size)
        _require_positive("batch_tokens", self.batch_tokens)
        if self.max_length is not None:
            _require_positive("max_length", self.max_length)
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ConfigError("model must be a non-empty model id or directory")

    def replace(self, **changes: Any) -> Settings:
        """A copy with the given values changed; None means "keep the current value"."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


SETTING_NAMES = tuple(field.name for field in dataclasses.fields(Settings))


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


def _require_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def load_settings(config_file: str | Path | None = None, **flags: Any) -> Settings:
    """Defaults, overridden by CONFIG_FILE's keys, overridden by every flag that is not None."""
    values = read_config_file(config_file) if config_file else {}
    try:
        settings = Settings(**values)
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
        raise ConfigError(
            f"{path}: unknown setting {', '.join(unknown)}; valid settings: {', '.join(SETTING_NAMES)}"
        )
    return values
