"""searcher: semantic search by meaning over BERT-family embeddings, FAISS and SQLite."""

from importlib.metadata import version

__version__ = version("searcher")

from .config import EmbeddingSettings, Settings, load_settings  # noqa: E402
from .errors import SearcherError  # noqa: E402
from .index import Index  # noqa: E402
from .manifest import EmbeddingSpec, Manifest  # noqa: E402
from .paths import list_indexes  # noqa: E402
from .search import Hit, Passage  # noqa: E402
from .sources import Record, read_records  # noqa: E402
from .tune import Hyperparameters, TuneReport, tune  # noqa: E402
from .writes import AddReport  # noqa: E402

__all__ = [
    "AddReport",
    "EmbeddingSettings",
    "EmbeddingSpec",
    "Hit",
    "Hyperparameters",
    "Index",
    "Manifest",
    "Passage",
    "Record",
    "SearcherError",
    "Settings",
    "TuneReport",
    "list_indexes",
    "load_settings",
    "read_records",
    "tune",
]
