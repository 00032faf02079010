"""Embedding on a Ray cluster: an actor pool runs the same `Embedder` code as the local path.

ray is imported here and nowhere else (the optional extra `searcher[ray]`). The driver keeps the one writer:
it reads and plans as the local path does, hands the (text, phrasings) of the documents to embed to Ray Data,
and stores each batch of vectors that comes back through `Index.add`, one transaction per batch. A re-run
after a crash embeds only what was not stored (documents are skipped by content hash); Ray retries the
tasks of a lost worker itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import BATCH_SIZE
from .embedder import EmbeddedDocuments, Embedder
from .errors import ConfigError, ModelMismatchError
from .index import EMBEDDING_KEYS, PRE_PRECISION_MANIFEST, Index

if TYPE_CHECKING:
    from .index import EmbeddingEngine

try:
    import ray
    import ray.data
except ImportError:  # the extra is optional: `engine()` says how to get it
    ray = None


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: a cluster address (None: a local cluster for this run), actors, GPUs per actor."""

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    batch_size: int = BATCH_SIZE  # documents per actor call

    def __post_init__(self) -> None:
        if self.actors < 1 or self.gpus_per_actor < 0 or self.batch_size < 1:
            raise ConfigError(f"invalid Ray options {self}: actors and batch size at least 1, GPUs not negative")


class _EmbedActor:
    """One model per actor, loaded once; embeds batches of documents exactly as the local path does."""

    def __init__(self, embedding: dict[str, Any], fingerprint: str, batch_tokens: int) -> None:
        self.embedder = Embedder(**embedding)
        if self.embedder.fingerprint != fingerprint:
            raise ModelMismatchError(f"the model on this Ray worker ({self.embedder.model_dir}) differs from the index's")
        self.batch_tokens = batch_tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        documents = [(str(text), tuple(phrasings)) for text, phrasings in zip(batch["text"], batch["phrasings"])]
        positions, vectors, truncated = [], [], []
        for embedded in self.embedder.embed_documents(documents, len(documents), self.batch_tokens):
            counts = [1 + len(documents[i][1]) for i in embedded.positions]
            rows = np.split(embedded.vectors, np.cumsum(counts)[:-1])
            positions += [int(batch["position"][i]) for i in embedded.positions]
            vectors += [row.reshape(-1) for row in rows]
            # Cut texts are counted per batch: the count goes on the batch's first row, zeros on the rest.
            truncated += [embedded.truncated] + [0] * (len(embedded.positions) - 1)
        flat = np.empty(len(vectors), dtype=object)
        flat[:] = vectors
        return {"position": np.array(positions), "vectors": flat, "truncated": np.array(truncated)}


def engine(index: Index, batch_tokens: int, options: RayOptions) -> EmbeddingEngine:
    """An embedding engine for `Index.add` on Ray: each actor loads the model of INDEX's manifest."""
    if ray is None:
        raise ConfigError("--engine ray needs Ray: pip install 'searcher[ray]'")
    manifest = PRE_PRECISION_MANIFEST | index.manifest
    embedding = {key: manifest[key] for key in EMBEDDING_KEYS} | {"device": "cuda" if options.gpus_per_actor else "cpu"}
    constructor = {"embedding": embedding, "fingerprint": manifest["fingerprint"], "batch_tokens": batch_tokens}

    def embed(documents: list[tuple[str, tuple[str, ...]]]) -> Iterator[EmbeddedDocuments]:
        if not documents:
            return
        with _cluster(options.address):
            rows = [{"position": i, "text": text, "phrasings": list(phrasings)} for i, (text, phrasings) in enumerate(documents)]
            blocks = max(options.actors, -(-len(rows) // options.batch_size))  # every actor gets work
            dataset = ray.data.from_items(rows, override_num_blocks=blocks)
            embedded = dataset.map_batches(
                _EmbedActor,
                fn_constructor_kwargs=constructor,
                batch_size=options.batch_size,
                concurrency=options.actors,
                num_gpus=options.gpus_per_actor,
                batch_format="numpy",
            )
            for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
                vectors = np.concatenate([np.asarray(row, dtype=np.float32) for row in batch["vectors"]]).reshape(-1, manifest["dimension"])
                yield EmbeddedDocuments(batch["position"].tolist(), vectors, int(batch["truncated"].sum()))

    return embed


@contextmanager
def _cluster(address: str | None) -> Iterator[None]:
    """The cluster at ADDRESS, or one already joined, or a local one started for this run and stopped after."""
    if ray.is_initialized():
        yield
        return
    for name in ("ray", "ray.data"):  # their progress lines would interleave with the CLI's own bar
        logging.getLogger(name).setLevel(logging.ERROR)
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()
