"""The FAISS vector index: inner product over L2-normalized vectors (= cosine), ids = SQLite rowids."""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from .errors import IndexCorruptError, IndexWriteError


class VectorIndex:
    """An `IndexIDMap2` over exact inner-product search, saved by atomic file replacement."""

    def __init__(self, index: faiss.Index) -> None:
        self._index = index

    @classmethod
    def empty(cls, dimension: int) -> VectorIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dimension)))

    @classmethod
    def build(cls, dimension: int, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        index = cls.empty(dimension)
        index.add(ids, vectors)
        return index

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        try:
            return cls(faiss.read_index(str(path)))
        except RuntimeError as error:
            raise IndexCorruptError(f"{path}: unreadable FAISS index ({str(error).splitlines()[0]})") from None

    @property
    def dimension(self) -> int:
        return self._index.d

    def __len__(self) -> int:
        return self._index.ntotal

    def ids(self) -> np.ndarray:
        """The stored ids, sorted."""
        return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    def add(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        """Add VECTORS under new IDS."""
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray | list[int]) -> None:
        if len(ids):
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The K nearest (id, cosine) pairs for one normalized VECTOR, best first."""
        scores, ids = self._index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]

    def save(self, path: Path) -> None:
        """Write to a temporary file, fsync, then rename over PATH: readers see the old or the new file."""
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            faiss.write_index(self._index, str(temporary))
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except (OSError, RuntimeError) as error:  # faiss reports a failed write as RuntimeError
            temporary.unlink(missing_ok=True)
            raise IndexWriteError(f"cannot write {path}: {str(error).splitlines()[0]}") from None
