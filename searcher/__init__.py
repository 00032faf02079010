"""searcher: semantic search by meaning over BERT-family embeddings, FAISS and SQLite."""

from importlib.metadata import version

__version__ = version("searcher")

from .config import Settings, load_settings  # noqa: E402
from .errors import SearcherError  # noqa: E402
from .index import AddReport, Hit, Index, list_indexes  # noqa: E402
from .sources import Record, read_records  # noqa: E402

__all__ = ["AddReport", "Hit", "Index", "Record", "SearcherError", "Settings", "list_indexes", "load_settings", "read_records"]
