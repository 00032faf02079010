"""Vector structures at scale: build time, size, single-query latency and recall@10 against exact search.

    python benchmarks/vector_index.py --vectors 1000000 [--types flat ivf ivfpq hnsw auto] [--queries 500]

Synthetic data, seeded: unit vectors of dimension 384 that vary along 24 hidden directions, plus a little
noise (text embeddings have a low intrinsic dimension and no clean clusters), queries drawn the same way
but not stored. Each structure is built with searcher's own
`VectorIndex.build` and default search parameters; latency is one query at a time, as a search service sees
them; recall@10 is the share of the exact top 10 (flat search) that the structure returns. ivfpq re-scores its
candidates with the exact vectors, here from memory (searcher reads them from SQLite: see speed.py's latency).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from searcher.vectors import VectorIndex, resolve_type

DIMENSION = 384
LATENT = 24
NOISE = 0.1


def sample(count: int, rng: np.random.Generator, projection: np.ndarray) -> np.ndarray:
    vectors = rng.standard_normal((count, LATENT)).astype(np.float32) @ projection
    vectors += NOISE * rng.standard_normal((count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def measure(kind: str, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    started = time.perf_counter()
    index = VectorIndex.build(DIMENSION, ids, vectors, kind)
    built = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "vectors.faiss"
        index.save(path)
        size = path.stat().st_size
    timings, found = [], []
    for query in queries:
        started = time.perf_counter()
        hits = index.search(query, 10, lambda found: vectors[found - 1])
        timings.append((time.perf_counter() - started) * 1000)
        found.append([vector_id for vector_id, _ in hits])
    recall = float(np.mean([len(set(row) & set(expected)) / 10 for row, expected in zip(found, truth, strict=True)]))
    return {
        "type": kind if kind != "auto" else f"auto → {index.kind}",
        "build_s": built,
        "mb": size / 2**20,
        "p50": float(np.percentile(timings, 50)),
        "p99": float(np.percentile(timings, 99)),
        "recall": recall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--types", nargs="+", default=["flat", "ivf", "ivfpq", "hnsw"], help="also: auto (builds its choice again)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    projection = rng.standard_normal((LATENT, DIMENSION)).astype(np.float32) / np.sqrt(LATENT)
    vectors = sample(args.vectors, rng, projection)
    queries = sample(args.queries, rng, projection)
    ids = np.arange(1, args.vectors + 1)
    exact = faiss.IndexFlatIP(DIMENSION)
    exact.add(vectors)
    truth = exact.search(queries, 10)[1] + 1
    del exact
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, faiss {faiss.__version__}, "
        f"{faiss.omp_get_max_threads()} threads; "
        f"{args.vectors:,} vectors of dimension {DIMENSION} ({LATENT} hidden directions), "
        f"{args.queries} queries, k=10; "
        f"auto means {resolve_type('auto', args.vectors)} at this size"
    )
    print("\n| type | build s | file MB | p50 ms | p99 ms | recall@10 |")
    print("|---|---|---|---|---|---|")
    for kind in args.types:
        row = measure(kind, ids, vectors, queries, truth)
        print(
            f"| {row['type']} | {row['build_s']:.1f} | {row['mb']:,.0f} | {row['p50']:.2f} | {row['p99']:.2f} "
            f"| {row['recall']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
