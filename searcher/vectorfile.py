"""The life of an index's FAISS file: loaded (memory-mapped), kept in step with SQLite by generation, saved atomically.

SQLite is the truth and the file is derived from its `vectors` table. Every write transaction raises the
store's generation; a saved file records the generation it reflects (`vectors_generation` in the manifest).
Readers never write: a file that is missing, unreadable or behind SQLite is rebuilt in memory, with a
warning, and left on disk as it is; only a writer's `save` (or `searcher check --repair`) replaces it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .errors import IndexCorruptError
from .manifest import Manifest
from .store import DocumentStore
from .vectors import VectorIndex, resolve_type

log = logging.getLogger("searcher")


class VectorFile:
    """The vector structure of one index, as this process sees it, and the file it is saved to.

    Loaded on first use, so that opening an index to check, describe or delete from it costs no FAISS work.
    """

    def __init__(self, path: Path, store: DocumentStore, name: str) -> None:
        self.path = path
        self._store = store
        self._name = name
        self._stale = False  # vectors were dropped that the structure cannot remove in place (HNSW)
        self._vectors: VectorIndex | None = None
        self._seen: int | None = None  # the `vectors_generation` the manifest named when they were loaded

    @property
    def vectors(self) -> VectorIndex:
        if self._vectors is None:
            self._vectors, self._seen = self._load(mmap=True)
        return self._vectors

    def _load(self, mmap: bool) -> tuple[VectorIndex, int | None]:
        """The file (IVF lists memory-mapped with MMAP) if it reflects SQLite's current state, else a rebuild
        in memory; with the `vectors_generation` the manifest named meanwhile."""
        manifest = self._manifest()
        on_disk = self._read(manifest, mmap)
        if on_disk is not None and self._current(on_disk, manifest):
            return on_disk, manifest.vectors_generation
        log.warning(
            "the vector file of index %s is missing, unreadable or out of date: rebuilt in memory from the stored "
            "vectors (`searcher check %s --repair` saves it)",
            self._name,
            self._name,
        )
        return self.rebuild(), manifest.vectors_generation

    def _manifest(self) -> Manifest:
        return Manifest.from_dict(self._store.manifest(), self._name)

    def _read(self, manifest: Manifest, mmap: bool) -> VectorIndex | None:
        if not self.path.exists():
            return None
        try:
            return VectorIndex.load(self.path, manifest.search_params, mmap)
        except IndexCorruptError:
            return None  # derived data: rebuilt like a missing file

    def _current(self, vectors: VectorIndex, manifest: Manifest) -> bool:
        if vectors.dimension != manifest.dimension:
            return False
        if manifest.vectors_generation == manifest.generation and len(vectors) == self._store.vector_count():
            return True
        return same_ids(vectors, self._store)

    def rebuild(self) -> VectorIndex:
        """A new structure of the manifest's index type over every stored vector (nothing is embedded)."""
        manifest = self._manifest()
        ids, vectors = self._store.vectors(manifest.dimension)
        return VectorIndex.build(manifest.dimension, ids, vectors, manifest.index_type, manifest.search_params)

    def refresh(self, manifest: Manifest) -> None:
        """Pick up the file a writer saved since this one was loaded, as the current MANIFEST names it; the writer
        vouches that it is whole."""
        if self._vectors is not None and manifest.vectors_generation != self._seen and self.path.exists():
            self._vectors = VectorIndex.load(self.path, manifest.search_params, mmap=True)
            self._seen = manifest.vectors_generation

    def prepare_write(self) -> None:
        """Under the writer lock: the latest vectors, in memory, where changes can be applied."""
        if self._vectors is None or self._vectors.read_only or self._manifest().vectors_generation != self._seen:
            self._vectors, self._seen = self._load(mmap=False)

    def apply(self, dropped: list[int], added_ids: list[int] | None = None, added: np.ndarray | None = None) -> None:
        """Apply a committed write: DROPPED vector ids leave, ADDED vectors come in under ADDED_IDS."""
        if self.vectors.removes:
            self.vectors.remove(dropped)
        elif dropped:
            self._stale = True  # an HNSW graph cannot remove: rebuilt at the next save
        if added_ids and added is not None:
            self.vectors.add(added_ids, added)

    def replace(self, vectors: VectorIndex) -> None:
        self._vectors, self._stale = vectors, False

    def save(self) -> None:
        """Save atomically, then record which SQLite generation the file reflects.

        The structure is rebuilt first when it no longer fits: an HNSW graph after removals, or a vector
        count for which the index type now means another structure (auto past 50,000 vectors).
        """
        wanted = resolve_type(self._manifest().index_type, len(self.vectors))
        if self._stale or wanted != self.vectors.kind:
            self.replace(self.rebuild())
        generation = self._store.generation()
        self.vectors.save(self.path)
        self._store.update_manifest({"vectors_generation": generation})
        self._seen = generation

    def problems(self) -> list[str]:
        """What is wrong with the file on disk: unreadable, missing, or out of step with SQLite."""
        if not self.path.exists():
            return [f"{self.path.name} is missing (searches rebuild it in memory each time the index is opened)"]
        try:
            on_disk = VectorIndex.load(self.path, mmap=True)
        except IndexCorruptError as error:
            return [str(error)]
        if not same_ids(on_disk, self._store):
            return [f"{self.path.name} is out of step with docs.sqlite (searches rebuild it in memory on open)"]
        return []


def same_ids(vectors: VectorIndex, store: DocumentStore) -> bool:
    stored = store.vector_ids()
    return len(vectors) == len(stored) and bool((vectors.ids() == stored).all())
