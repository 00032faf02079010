"""The FAISS vector index: inner product over L2-normalized vectors (= cosine), ids = SQLite rowids.

Four structures: exact `flat` and `hnsw` (a neighbour graph searched `ef_search` wide), each inside an
`IndexIDMap2`; `ivf` (k-means cells, `nprobe` of them scanned per query) and `ivfpq` (the same cells holding
product-quantized codes of a few dozen bytes per vector), which keep the ids themselves: `IndexIDMap2`
renumbers after a removal the way a flat index does, which an IVF index does not. `auto` picks by vector
count. An ivfpq index's scores are approximate, so its candidates are re-scored with the exact vectors,
which the caller keeps (searcher: in SQLite); IVF files can be memory-mapped for reading.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np

from .config import INDEX_TYPES
from .errors import ConfigError, IndexCorruptError, IndexWriteError
from .paths import sync_directory

SEARCH_PARAMS = ("nprobe", "ef_search")
# auto: exact search up to this many vectors (a query scans them all in a few ms), ivfpq above.
EXACT_LIMIT = 50_000
# k-means needs this many vectors to learn its cells (and the 256 codes of each PQ part); with fewer, flat.
MIN_TRAINING = {"ivf": 1_000, "ivfpq": 10_000}
PQ_DIMENSIONS_PER_CODE = 8  # each byte of a PQ code stands for 8 dimensions: 48 bytes for 384
RERANK_DEPTH = 30  # ivfpq: candidates per wanted hit re-scored exactly (recall@10 0.973 at 1M; 10: 0.920)
TRAINING_PER_CELL = 64  # vectors sampled per cell to train on: enough for k-means, fast at a million
# Training costs cells² (k-means over TRAINING_PER_CELL vectors a cell): 4,096 cells (a million vectors) take
# minutes on two cores, 8,192 four times as long. A query scans 1/16 of the vectors whatever the cell count.
MAX_CELLS = 4096
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 64


def resolve_type(requested: str, count: int) -> str:
    """The structure for COUNT vectors: REQUESTED, or for "auto" flat up to EXACT_LIMIT, then IVF-PQ."""
    if requested not in INDEX_TYPES:
        raise ConfigError(f"invalid index type {requested!r}: choose one of {', '.join(INDEX_TYPES)}")
    if requested == "auto":
        requested = "flat" if count <= EXACT_LIMIT else "ivfpq"
    if count < MIN_TRAINING.get(requested, 0):
        return "flat"
    return requested


def check_search_params(params: dict[str, Any]) -> dict[str, int]:
    """PARAMS if every key is a known search parameter with a positive integer value."""
    for key, value in params.items():
        if key not in SEARCH_PARAMS:
            raise ConfigError(f"unknown search parameter {key!r}: choose from {', '.join(SEARCH_PARAMS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return dict(params)


def cells_for(count: int) -> int:
    """IVF cells: about 4·√N, with at least 39 training vectors per cell (FAISS's rule of thumb), at most
    MAX_CELLS."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39, MAX_CELLS))


def pq_parts(dimension: int) -> int:
    """Bytes per PQ code: about one per PQ_DIMENSIONS_PER_CODE dimensions, a divisor of DIMENSION."""
    return max(m for m in range(1, max(1, dimension // PQ_DIMENSIONS_PER_CODE) + 1) if dimension % m == 0)


def default_nprobe(cells: int) -> int:
    """Cells scanned per query: 1/16 of them, at least 8 (recall@10 0.977 at a million vectors, README "Speed")."""
    return min(cells, max(8, cells // 16))


class Excluded:
    """Ids to leave out of searches, with the FAISS selector that leaves them out, built once rather than by
    each search (0.3 ms for 10,000 ids)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        # The batch is kept here: the selector holds only a C++ pointer to it.
        self._batch = faiss.IDSelectorBatch(self.ids) if len(self.ids) else None
        self.selector = faiss.IDSelectorNot(self._batch) if self._batch is not None else None

    def __len__(self) -> int:
        return len(self.ids)


class VectorIndex:
    """One of the FAISS structures above, searched by inner product, saved by atomic file replacement."""

    def __init__(self, index: faiss.Index, search: dict[str, int] | None = None, read_only: bool = False) -> None:
        self._index = index
        self.read_only = read_only  # memory-mapped IVF lists: searched in place, never changed
        self.configure(search or {})

    @classmethod
    def empty(cls, dimension: int) -> VectorIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dimension)))

    @classmethod
    def build(
        cls,
        dimension: int,
        ids: np.ndarray | list[int],
        vectors: np.ndarray,
        index_type: str = "flat",
        search: dict[str, int] | None = None,
    ) -> VectorIndex:
        """A new index over VECTORS, held in memory whole (see `build_from`)."""
        return cls.build_from(dimension, len(ids), lambda: iter([(np.asarray(ids), vectors)]), index_type, search)

    @classmethod
    def build_from(
        cls,
        dimension: int,
        count: int,
        chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
        index_type: str = "flat",
        search: dict[str, int] | None = None,
    ) -> VectorIndex:
        """A new index over the COUNT vectors that each call of CHUNKS yields, (ids, vectors) at a time, in the
        same order. An IVF structure learns its cells from a seeded sample of them (one pass), then takes them
        chunk by chunk (another): memory holds the structure, the sample and one chunk, never every vector."""
        kind = resolve_type(index_type, count)
        cells = cells_for(count)
        description = {
            "flat": "IDMap2,Flat",
            "ivf": f"IVF{cells},Flat",
            # np: no polysemous training, two thirds of the training time for codes searched by their distance
            # tables alone (polysemous_ht stays 0), which that training leaves unchanged.
            "ivfpq": f"IVF{cells},PQ{pq_parts(dimension)}np",
            "hnsw": f"IDMap2,HNSW{HNSW_NEIGHBOURS},Flat",
        }[kind]
        index = faiss.index_factory(dimension, description, faiss.METRIC_INNER_PRODUCT)
        if kind.startswith("ivf"):
            index.train(_sample(chunks(), count, cells * TRAINING_PER_CELL))
        if kind == "hnsw":
            cast(faiss.IndexHNSW, _unwrapped(index)).hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        built = cls(index, search)
        for chunk_ids, chunk_vectors in chunks():
            built.add(chunk_ids, chunk_vectors)
        return built

    @classmethod
    def load(cls, path: Path, search: dict[str, int] | None = None, mmap: bool = False) -> VectorIndex:
        """The index saved at PATH; with MMAP, IVF lists stay in the file and are paged in as queries need them.

        Opening is then instant whatever the size, and processes serving one index share its pages. A
        writer replaces the file by renaming, so a mapped file never changes under its reader.
        """
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0)
            return cls(index, search, read_only=mmap and isinstance(index, faiss.IndexIVF))
        except RuntimeError as error:
            raise IndexCorruptError(f"{path}: unreadable FAISS index ({str(error).splitlines()[0]})") from None

    def configure(self, search: dict[str, int]) -> None:
        """Set the query-time width: nprobe for IVF structures, ef_search for HNSW (defaults when absent)."""
        inner = self._inner
        if isinstance(inner, faiss.IndexIVF):
            inner.nprobe = min(inner.nlist, search.get("nprobe") or default_nprobe(inner.nlist))
        elif isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = search.get("ef_search") or DEFAULT_EF_SEARCH

    @property
    def search_width(self) -> dict[str, int]:
        """The query-time width in force: nprobe of nlist cells (IVF), ef_search (HNSW); empty for flat."""
        inner = self._inner
        if isinstance(inner, faiss.IndexIVF):
            return {"nprobe": inner.nprobe, "nlist": inner.nlist}
        if isinstance(inner, faiss.IndexHNSW):
            return {"ef_search": inner.hnsw.efSearch}
        return {}

    @property
    def _inner(self) -> faiss.Index:
        return _unwrapped(self._index)

    @property
    def kind(self) -> str:
        inner = self._inner
        if isinstance(inner, faiss.IndexIVFPQ):
            return "ivfpq"
        if isinstance(inner, faiss.IndexIVF):
            return "ivf"
        return "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"

    @property
    def removes(self) -> bool:
        """Whether vectors can be removed in place (an HNSW graph must be rebuilt instead)."""
        return self.kind != "hnsw"

    @property
    def dimension(self) -> int:
        return self._index.d

    def __len__(self) -> int:
        return self._index.ntotal

    def ids(self) -> np.ndarray:
        """The stored ids, sorted."""
        if isinstance(self._index, faiss.IndexIVF):
            lists = self._index.invlists
            assert lists is not None  # null only in an index being assembled by hand in C++
            cells = [faiss.rev_swig_ptr(lists.get_ids(cell), lists.list_size(cell)) for cell in range(lists.nlist)]
            return np.sort(np.concatenate([np.empty(0, dtype=np.int64), *cells]).astype(np.int64))
        return np.sort(faiss.vector_to_array(cast(faiss.IndexIDMap, self._index).id_map).astype(np.int64))

    def outgrown(self, count: int) -> bool:
        """Whether an IVF structure holding COUNT vectors would want twice the cells it learnt (`cells_for`):
        one trained early in a long write is trained again each time the index has grown about fourfold."""
        inner = self._inner
        return isinstance(inner, faiss.IndexIVF) and cells_for(count) >= 2 * inner.nlist

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) in the order they were added; flat structures only, which keep the vectors whole."""
        if self.kind != "flat":
            raise ValueError(f"a {self.kind} structure does not keep its vectors whole")
        ids = faiss.vector_to_array(cast(faiss.IndexIDMap2, self._index).id_map).astype(np.int64)
        return ids, _unwrapped(self._index).reconstruct_n(0, len(ids))

    def add(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        """Add VECTORS under new IDS."""
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray | list[int]) -> None:
        """Remove IDS; only where `removes` is true."""
        if len(ids):
            # The stubs take only an IDSelector; faiss's Python wrapper builds the right one from an id array.
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))  # type: ignore[arg-type]

    def search(
        self,
        vector: np.ndarray,
        k: int,
        exact: Callable[[np.ndarray], np.ndarray] | None = None,
        excluded: Excluded | None = None,
    ) -> list[tuple[int, float]]:
        """The K nearest (id, cosine) pairs for one normalized VECTOR, best first, none of the EXCLUDED ids.

        EXACT gives the stored vectors of an array of ids. An ivfpq index fetches RERANK_DEPTH·K candidates
        by their compressed codes and re-scores them with EXACT, so the scores returned are true cosines;
        without EXACT they are the codes' approximations.
        """
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        rescore = exact if self.kind == "ivfpq" else None  # the other structures' scores are exact already
        threads = faiss.omp_get_max_threads()
        # One query is faster on one thread (flat, 100,000 vectors: 8.4 ms against 15.9 ms on two): waking
        # OpenMP workers costs more than they save. The setting is the calling thread's own, so restored.
        faiss.omp_set_num_threads(1)
        try:
            selector = excluded.selector if excluded is not None else None
            parameters = self._parameters(selector) if selector is not None else None
            scores, ids = self._index.search(query, k * RERANK_DEPTH if rescore else k, params=parameters)
        finally:
            faiss.omp_set_num_threads(threads)
        found = ids[0] != -1
        ids, scores = ids[0][found], scores[0][found]
        if rescore and len(ids):
            scores = rescore(ids) @ query[0]
            best = np.argsort(-scores, kind="stable")[:k]
            ids, scores = ids[best], scores[best]
        return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]

    def _parameters(self, selector: faiss.IDSelector) -> faiss.SearchParameters:
        """Search parameters keeping what SELECTOR selects, with the structure's own width (they replace it).

        faiss's type stubs lag its Python wrapper, which takes the fields as keywords.
        """
        inner = self._inner
        if isinstance(inner, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=selector, nprobe=inner.nprobe)  # type: ignore[call-arg]
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=inner.hnsw.efSearch)  # type: ignore[attr-defined]
        return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]

    def save(self, path: Path) -> None:
        """Write to a temporary file, fsync, then rename over PATH: readers see the old or the new file."""
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            faiss.write_index(self._index, str(temporary))
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            sync_directory(path.parent)
        except (OSError, RuntimeError) as error:  # faiss reports a failed write as RuntimeError
            temporary.unlink(missing_ok=True)
            raise IndexWriteError(f"cannot write {path}: {str(error).splitlines()[0]}") from None


def _sample(chunks: Iterator[tuple[np.ndarray, np.ndarray]], count: int, size: int) -> np.ndarray:
    """SIZE of the COUNT vectors CHUNKS yields, drawn with a fixed seed (the same sample each build), in order."""
    picked = np.sort(np.random.default_rng(0).permutation(count)[:size])
    taken, start = [], 0
    for _, vectors in chunks:
        first, last = np.searchsorted(picked, [start, start + len(vectors)])
        taken.append(vectors[picked[first:last] - start])
        start += len(vectors)
    return np.ascontiguousarray(np.concatenate(taken), dtype=np.float32)


def _unwrapped(index: faiss.Index) -> faiss.Index:
    """The structure itself, inside its id map where it has one (every kind but IVF, which keeps its own ids)."""
    return index if isinstance(index, faiss.IndexIVF) else faiss.downcast_index(cast(faiss.IndexIDMap, index).index)
