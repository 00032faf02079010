"""The life of an index's FAISS file: loaded (memory-mapped), kept in step with SQLite by generation, compacted.

SQLite is the truth and the file is derived from its `vectors` table. Every write transaction raises the
store's generation and logs the vectors it removed; a saved file records the generation it reflects
(`vectors_generation` in the manifest). A write does not rewrite the file: every process applies the
vectors added and removed since the generation it holds to its structure in memory (`LiveVectors`), so a
write costs in proportion to what it changed, not to the index's size. A writer rewrites the whole file
(a compaction) only once the changes since the last one pass a share of the index, and on `reindex` and
`check --repair`; readers then load the new file.

Readers never write: a file that is missing, unreadable or does not add up with SQLite is rebuilt in
memory, with a warning, and left on disk as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import IndexCorruptError
from .manifest import Manifest
from .store import Changes, DocumentStore
from .vectors import Excluded, VectorIndex, resolve_type

log = logging.getLogger("searcher")
# A compaction comes once the vectors added or removed since the file was saved pass this share of the index
# (and COMPACTION_MINIMUM): until then each process holds them apart, in memory.
COMPACTION_SHARE = 0.1
COMPACTION_MINIMUM = 100
# Bytes an added vector costs beyond its floats while held apart: its id in FAISS's id map and reverse map.
PENDING_OVERHEAD = 64


def pending_limit(buffer_mb: int, dimension: int) -> int:
    """How many added vectors of DIMENSION `LiveVectors` holds apart in BUFFER_MB."""
    return max(1, (buffer_mb << 20) // (4 * dimension + PENDING_OVERHEAD))


class LiveVectors:
    """A saved structure (BASE) and what writes did since: vectors added, held in a small flat structure, and
    base vectors removed, left out of its searches. Searched as one."""

    def __init__(self, base: VectorIndex, generation: int) -> None:
        self.base = base
        self.generation = generation  # the store generation these vectors reflect
        self.last_id = int(base.ids()[-1]) if len(base) else 0  # rowids only grow: past it, all is new
        self._base_last = self.last_id
        self._hidden = Excluded(np.empty(0, dtype=np.int64))  # base ids removed since, sorted
        self._recent = VectorIndex.empty(base.dimension)  # the added vectors, searched exactly

    def apply(self, removed: np.ndarray, added_ids: np.ndarray, added: np.ndarray, generation: int) -> None:
        """Take in a write (or several): the REMOVED ids leave, ADDED vectors come in under ADDED_IDS."""
        removed = np.asarray(removed, dtype=np.int64)
        in_base = removed <= self._base_last
        if in_base.any():
            self._hidden = Excluded(np.union1d(self._hidden.ids, removed[in_base]))
        self._recent.remove(removed[~in_base])
        if len(added_ids):
            self._recent.add(added_ids, added)
            self.last_id = max(self.last_id, int(np.max(added_ids)))
        self.generation = generation

    @property
    def changes(self) -> int:
        """Vectors added or removed since the base was saved."""
        return len(self._hidden) + len(self._recent)

    def search(
        self, vector: np.ndarray, k: int, exact: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> list[tuple[int, float]]:
        """The K nearest (id, cosine) pairs, best first, over the base (less what was removed) and the added."""
        found = self.base.search(vector, k, exact, excluded=self._hidden)
        if len(self._recent):
            found = sorted(found + self._recent.search(vector, k), key=lambda match: -match[1])[:k]
        return found

    def merged(self) -> VectorIndex | None:
        """The base with the changes applied in place, if it can take them (memory, not a mapped file; a
        structure that can remove); else None."""
        if self.base.read_only or (len(self._hidden) and not self.base.removes):
            return None
        self.base.remove(self._hidden.ids)
        if len(self._recent):
            self.base.add(*self._recent.contents())
        return self.base

    def ids(self) -> np.ndarray:
        """The ids searched, sorted."""
        kept = self.base.ids()
        return np.union1d(kept[~np.isin(kept, self._hidden.ids)], self._recent.ids())

    def __len__(self) -> int:
        return len(self.base) - len(self._hidden) + len(self._recent)

    @property
    def dimension(self) -> int:
        return self.base.dimension

    @property
    def kind(self) -> str:
        return self.base.kind

    @property
    def read_only(self) -> bool:
        return self.base.read_only

    @property
    def search_width(self) -> dict[str, int]:
        return self.base.search_width


class VectorFile:
    """The vectors of one index, as this process sees them, and the file they are saved to.

    Loaded on first use, so that opening an index to check, describe or delete from it costs no FAISS work.
    """

    def __init__(self, path: Path, store: DocumentStore, name: str) -> None:
        self.path = path
        self._store = store
        self._name = name
        self._live: LiveVectors | None = None
        self._file_generation: int | None = None  # the `vectors_generation` of the file the base came from

    @property
    def vectors(self) -> LiveVectors:
        if self._live is None:
            self._live = self._load(mmap=True)
        return self._live

    def _load(self, mmap: bool) -> LiveVectors:
        """The file (IVF lists memory-mapped with MMAP) brought up to SQLite's state, else a rebuild in memory."""
        manifest = self._manifest()
        self._file_generation = manifest.vectors_generation
        on_disk = self._read(manifest, mmap)
        if on_disk is not None and on_disk.dimension == manifest.dimension:
            live = LiveVectors(on_disk, manifest.vectors_generation or 0)
            # A file newer than the manifest says (saved, its generation not yet recorded) is caught up from
            # an older generation: removing what it lacks already changes nothing. The count catches the rest.
            if self._catch_up(live) and len(live) == self._store.vector_count():
                return live
        log.warning(
            "the vector file of index %s is missing, unreadable or out of date: rebuilt in memory from the stored "
            "vectors (`searcher check %s --repair` saves it)",
            self._name,
            self._name,
        )
        return LiveVectors(self.rebuild(), self._store.generation())

    def _catch_up(self, live: LiveVectors) -> bool:
        """Apply to LIVE what writes did since its generation; False if SQLite no longer says (see
        `DocumentStore.changes_since`)."""
        changes: Changes | None = self._store.changes_since(live.generation, live.last_id, live.dimension)
        if changes is None:
            return False
        live.apply(changes.removed, changes.added_ids, changes.added, changes.generation)
        return True

    def _manifest(self) -> Manifest:
        return Manifest.from_dict(self._store.manifest(), self._name)

    def _read(self, manifest: Manifest, mmap: bool) -> VectorIndex | None:
        if not self.path.exists():
            return None
        try:
            return VectorIndex.load(self.path, manifest.search_params, mmap)
        except IndexCorruptError:
            return None  # derived data: rebuilt like a missing file

    def rebuild(self) -> VectorIndex:
        """A new structure of the manifest's index type over every stored vector (nothing is embedded)."""
        manifest = self._manifest()
        return VectorIndex.build_from(
            manifest.dimension,
            self._store.vector_count(),
            lambda: self._store.vectors(manifest.dimension),
            manifest.index_type,
            manifest.search_params,
        )

    def refresh(self, manifest: Manifest) -> None:
        """Catch up with the writes since these vectors were read, as the current MANIFEST names them: a new
        file after a compaction, else the changes logged in SQLite."""
        if self._live is None:
            return
        if manifest.vectors_generation != self._file_generation:
            self._live = self._load(mmap=True)
        elif manifest.generation != self._live.generation and not self._catch_up(self._live):
            self._live = self._load(mmap=True)

    def prepare_write(self) -> None:
        """Under the writer lock: the latest vectors, with a base in memory that a compaction can change."""
        if self._live is not None and not self._live.read_only:
            self.refresh(self._manifest())
        if self._live is None or self._live.read_only:
            self._live = self._load(mmap=False)

    def apply(self, dropped: list[int], added_ids: list[int] | None = None, added: np.ndarray | None = None) -> None:
        """Take in a committed write: DROPPED vector ids leave, ADDED vectors come in under ADDED_IDS."""
        dimension = self.vectors.dimension
        self.vectors.apply(
            np.asarray(dropped, dtype=np.int64),
            np.asarray(added_ids or [], dtype=np.int64),
            added if added is not None else np.empty((0, dimension), dtype=np.float32),
            self._store.generation(),
        )

    def replace(self, vectors: VectorIndex) -> None:
        self._live = LiveVectors(vectors, self._store.generation())

    def settle(self, long_write: bool = False) -> None:
        """After a writer's changes: compact if they have grown past COMPACTION_SHARE of the index, or if the
        index type now means another structure for its size (auto past 50,000 vectors). After a LONG_WRITE (one
        that compacted along the way, see `keep_bounded`), compact whatever it still holds apart: a build's last
        few hundred thousand vectors would otherwise be read from SQLite and searched exactly by every reader."""
        live = self.vectors
        if (
            (long_write and live.changes)
            or live.changes >= max(COMPACTION_MINIMUM, COMPACTION_SHARE * len(live))
            or resolve_type(self._manifest().index_type, len(live)) != live.kind
            or not self.path.exists()
        ):
            self.save()

    def keep_bounded(self, most: int) -> bool:
        """Within a write: compact once more than MOST vectors are held apart from the saved structure, so
        that a long write holds at most that many in memory (plus the structure), whatever it stores. Whether
        it compacted."""
        if self.vectors.changes <= most:
            return False
        self.save()
        return True

    def save(self) -> None:
        """A compaction: the whole structure saved atomically, then recorded as reflecting SQLite's generation.

        The structure is rebuilt first (from SQLite, chunk by chunk) when it cannot take the changes in place
        (an HNSW graph after removals), when the index type now means another structure for its size (auto
        past 50,000 vectors), or when an IVF structure has outgrown its cells.
        """
        live = self.vectors
        kept = resolve_type(self._manifest().index_type, len(live)) == live.kind and not live.base.outgrown(len(live))
        merged = live.merged() if kept else None  # decided first: no merging into a structure about to be rebuilt
        if merged is None:
            merged = self.rebuild()
        generation = self._store.generation()
        merged.save(self.path)
        self._store.record_compaction(generation, self._file_generation)
        self._live = LiveVectors(merged, generation)
        self._file_generation = generation

    def problems(self) -> list[str]:
        """What is wrong with the file on disk: unreadable, missing, or not adding up with SQLite."""
        if not self.path.exists():
            return [f"{self.path.name} is missing (searches rebuild it in memory each time the index is opened)"]
        try:
            on_disk = VectorIndex.load(self.path, mmap=True)
        except IndexCorruptError as error:
            return [str(error)]
        live = LiveVectors(on_disk, self._manifest().vectors_generation or 0)
        try:
            caught_up = self._catch_up(live)
        except IndexCorruptError:
            return []  # a stored vector is damaged: the store's problem, listed with the store's
        if not caught_up or not same_ids(live, self._store):
            return [f"{self.path.name} is out of step with docs.sqlite (searches rebuild it in memory on open)"]
        return []


def same_ids(vectors: LiveVectors, store: DocumentStore) -> bool:
    stored = store.vector_ids()
    return len(vectors) == len(stored) and bool((vectors.ids() == stored).all())
