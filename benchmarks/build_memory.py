"""A big index built in bounded memory: the writer's peak RSS, time and disk use, and the finished index's recall.

    python benchmarks/build_memory.py --documents 5000000 --home /var/tmp/searcher-scale

N synthetic documents (a short text each, and a vector standing for its embedding) are stored through
`Index.add_embedded` in shards, as vectors embedded elsewhere are: embedding five million texts on a CPU
would take hours and measure the model, not the writer. The writer runs in a process of its own, so its peak
RSS is its own (`ru_maxrss` of the child), with the default index type (auto: IVF-PQ past 50,000 vectors).

The vectors are drawn as `benchmarks/vector_index.py` draws them (unit vectors varying along 24 hidden
directions plus a little noise: a low intrinsic dimension and no clean clusters, hard on IVF on purpose), shard
by shard from a seed, so that the exact nearest neighbours of held-out queries can be found afterwards by
drawing the shards again, never holding them all. recall@10 = the share of each query's exact ten nearest
documents that the finished index returns in its ten hits (`Index.search_many` with the query vectors, so
IVF-PQ candidates are re-scored with the vectors stored in SQLite), averaged over --queries queries.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from machine import cpu_line  # benchmarks/machine.py: this script's own folder is first on the path
from vector_index import DIMENSION, LATENT, sample

from searcher import Index, Record, load_settings
from searcher.embedder import EmbeddedDocuments

SHARD = 20_000  # documents per `add_embedded` shard


class Corpus:
    """The synthetic corpus: each shard's vectors come from a generator of their own, seeded by (SEED, stream),
    so any shard can be made again, alone, in the same order. Stream 0 makes the hidden directions, 1 the queries."""

    def __init__(self, documents: int, seed: int) -> None:
        self.documents = documents
        self.seed = seed
        self.projection = np.random.default_rng([seed, 0]).standard_normal((LATENT, DIMENSION)).astype(np.float32)

    def vectors(self, count: int, stream: int) -> np.ndarray:
        """COUNT normalized vectors from the generator of STREAM."""
        return sample(count, np.random.default_rng([self.seed, stream]), self.projection)

    def shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first document number, vectors) of each shard in turn."""
        for number, start in enumerate(range(0, self.documents, SHARD)):
            yield start, self.vectors(min(SHARD, self.documents - start), 2 + number)

    def queries(self, count: int) -> np.ndarray:
        return self.vectors(count, stream=1)


def write(home: Path, documents: int, seed: int) -> None:
    """The writer process: the corpus stored shard by shard into a new index named "scale" under HOME."""
    corpus = Corpus(documents, seed)

    def shards() -> Iterator[tuple[list[Record], EmbeddedDocuments]]:
        for start, vectors in corpus.shards():
            records = [Record(f"doc-{start + i}", f"synthetic document {start + i}") for i in range(len(vectors))]
            yield records, EmbeddedDocuments(list(range(len(vectors))), vectors, 0)
            print(f"{start + len(vectors):,} documents stored", file=sys.stderr, flush=True)

    with Index.create("scale", load_settings(), home=home) as index:
        index.add_embedded(shards())


def exact_neighbours(corpus: Corpus, queries: np.ndarray, k: int) -> np.ndarray:
    """The document numbers of each query's K nearest documents by cosine, found shard by shard."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    for start, vectors in corpus.shards():
        scores = np.concatenate([best_scores, queries @ vectors.T], axis=1)
        numbers = np.broadcast_to(np.arange(start, start + len(vectors)), (len(queries), len(vectors)))
        ids = np.concatenate([best_ids, numbers], axis=1)
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    return best_ids


def recall_at(home: Path, corpus: Corpus, queries: np.ndarray, k: int) -> tuple[float, str, float]:
    """recall@K of the index under HOME against exact search, its vector structure, and ms per query."""
    truth = exact_neighbours(corpus, queries, k)
    with Index.open("scale", home) as index:
        texts = [f"query {i}" for i in range(len(queries))]
        index.search_many(texts[:10], k, vectors=queries[:10])  # warm: file mapped, manifest read
        started = time.perf_counter()
        hits = index.search_many(texts, k, vectors=queries)
        per_query = (time.perf_counter() - started) * 1000 / len(queries)
        kind = index.vectors.kind
    found = [{int(hit.id.removeprefix("doc-")) for hit in row} for row in hits]
    recall = float(np.mean([len(found_ids & set(row)) / k for found_ids, row in zip(found, truth, strict=True)]))
    return recall, kind, per_query


def disk_use(path: Path) -> dict[str, int]:
    return {file.name: file.stat().st_size for file in sorted(path.rglob("*")) if file.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=5_000_000)
    parser.add_argument("--home", type=Path, help="where to build (default: a temporary directory, removed after)")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--write", action="store_true", help=argparse.SUPPRESS)  # the writer process itself
    args = parser.parse_args()
    if args.write:
        write(args.home, args.documents, args.seed)
        return
    home = args.home or Path(tempfile.mkdtemp(prefix="searcher-scale-"))
    shutil.rmtree(home / "scale", ignore_errors=True)
    print(cpu_line(f"{args.documents:,} synthetic documents, shards of {SHARD:,}"), flush=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--write", "--home", str(home), "--documents", str(args.documents),
         "--seed", str(args.seed)],
        check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    files = disk_use(home / "scale")
    corpus = Corpus(args.documents, args.seed)
    recall, kind, per_query = recall_at(home, corpus, corpus.queries(args.queries), 10)
    figures = {
        "documents": args.documents,
        "seconds": round(seconds, 1),
        "documents_per_second": round(args.documents / seconds),
        "peak_writer_rss_mb": round(peak_mb),
        "disk_bytes": files,
        "kind": kind,
        "recall_at_10": round(recall, 4),
        "ms_per_query": round(per_query, 2),
    }
    print(
        f"\n| documents | writer time | documents/s | peak writer RSS | disk | structure | recall@10 | ms/query |\n"
        f"|---|---|---|---|---|---|---|---|\n"
        f"| {args.documents:,} | {seconds:.0f} s | {args.documents / seconds:,.0f} | {peak_mb:,.0f} MB | "
        f"{sum(files.values()) / 1e9:.2f} GB | {kind} | {recall:.3f} | {per_query:.2f} |"
    )
    print("disk: " + ", ".join(f"{name} {size / 1e6:,.0f} MB" for name, size in files.items() if size > 1e6))
    print(
        f"\n| target | measured | met |\n|---|---|---|\n"
        f"| peak writer RSS ≤ 4 GB | {peak_mb / 1024:.2f} GB | {'yes' if peak_mb <= 4096 else 'no'} |\n"
        f"| recall@10 ≥ 0.95 | {recall:.3f} | {'yes' if recall >= 0.95 else 'no'} |"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.home is None:
        shutil.rmtree(home)


if __name__ == "__main__":
    main()
