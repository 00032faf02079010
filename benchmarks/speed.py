"""Indexing speed beside sentence-transformers, the overhead around the model, and query latency.

    python benchmarks/speed.py --sts ../shared/datasets/stsbenchmark --scifact ../shared/datasets/scifact

1. Throughput: the 2,758 STS-B test sentences and the first 1,000 SciFact documents are embedded by
   sentence-transformers `SentenceTransformer(model).encode(texts, batch_size=64)` and indexed by the whole
   `searcher index` command (a fresh process: start-up, model load, tokenization, SQLite, FAISS), with the
   same model and thread count. The ratio column is searcher's texts/s over sentence-transformers'.
2. The same corpora through `Index.add` in this process, the model already loaded (what a long-running
   indexer or server sees), and its overhead: everything but the model's forward passes (tokenization,
   batching, SQLite, FAISS), as a share of the forward time.
3. Latency: an index of --latency-docs synthetic documents (random clustered vectors stored through
   `Index.add_embedded`, as vectors embedded elsewhere, into the default vector structure: auto, so IVF-PQ
   past 50,000 vectors; building it takes seconds, not an hour of embedding), then --queries real sentences
   through `Index.search`, warm; p50 and p99 in milliseconds, with the model's share. Also the fixed cost of
   a `searcher index` run of one document (with an empty cache, which traces the model, then with the
   trace cached) and the cold start of `searcher --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from searcher import Index, Record, Settings, load_settings
from searcher.config import BUNDLED_MODEL
from searcher.embedder import EmbeddedDocuments, Embedder, locate_model
from searcher.evaluate import load_sts
from searcher.sources import read_records

REFERENCE_BATCH_SIZE = 64
LATENCY_SHARD = 10_000  # synthetic documents stored per `add_embedded` shard (one SQLite transaction each)


def corpora(sts: Path, scifact: Path, scifact_docs: int) -> dict[str, list[str]]:
    sentences = [text for a, b, _ in load_sts(sts / "sts-test.csv") for text in (a, b)]
    documents = [
        record.text for _, record in zip(range(scifact_docs), read_records(scifact / "corpus.jsonl"), strict=False)
    ]
    return {"STS-B test sentences": sentences, f"SciFact first {len(documents):,} docs": documents}


def reference_seconds(texts: list[str]) -> float:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(locate_model(BUNDLED_MODEL)), device="cpu")
    model.encode(texts[:64], batch_size=REFERENCE_BATCH_SIZE)  # warm-up, as a long-running user process would be
    started = time.perf_counter()
    model.encode(texts, batch_size=REFERENCE_BATCH_SIZE)
    return time.perf_counter() - started


def command_seconds(texts: list[str], precision: str, cache: Path | None = None) -> float:
    """Wall time of a whole `searcher index` run on TEXTS in a new process (with CACHE as its cache directory,
    if given)."""
    with tempfile.TemporaryDirectory(prefix="searcher-speed-") as home:
        source = Path(home) / "texts.jsonl"
        source.write_text("".join(json.dumps({"id": str(i), "text": text}) + "\n" for i, text in enumerate(texts)))
        command = [
            sys.executable,
            "-m",
            "searcher",
            "index",
            str(source),
            "--index",
            "speed",
            "--home",
            home,
            "--precision",
            precision,
        ]
        environment = os.environ | ({"SEARCHER_CACHE_DIR": str(cache)} if cache else {})
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=environment)
        return time.perf_counter() - started


def in_process(texts: list[str], settings: Settings) -> tuple[float, float]:
    """Seconds of `Index.add` in all and in the model's forward passes."""
    with tempfile.TemporaryDirectory(prefix="searcher-speed-") as home:
        with Index.create("speed", settings, home=home) as index:
            report = index.add(
                [Record(str(i), text) for i, text in enumerate(texts)],
                settings.runtime.batch_size,
                settings.runtime.batch_tokens,
            )
    return report.seconds, report.model_seconds


def synthetic_shards(vectors: np.ndarray) -> Iterator[tuple[list[Record], EmbeddedDocuments]]:
    """One synthetic document per row of VECTORS, as `Index.add_embedded` shards of LATENCY_SHARD documents."""
    for start in range(0, len(vectors), LATENCY_SHARD):
        block = vectors[start : start + LATENCY_SHARD]
        records = [Record(f"doc-{i}", f"synthetic document {i}") for i in range(start, start + len(block))]
        yield records, EmbeddedDocuments(list(range(len(block))), block, 0)


def latency(documents: int, queries: list[str], settings: Settings, seed: int = 0) -> dict[str, float]:
    """p50/p99 milliseconds of `Index.search` over DOCUMENTS synthetic documents."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="searcher-latency-") as home:
        with Index.create("latency", settings, home=home) as index:
            dimension = index.embedder.dimension
            centres = rng.standard_normal((256, dimension)).astype(np.float32)
            vectors = centres[rng.integers(0, len(centres), documents)] + 0.5 * rng.standard_normal(
                (documents, dimension)
            ).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            index.add_embedded(synthetic_shards(vectors))  # saved in the structure auto means for this count
        with Index.open("latency", home) as index:
            for query in queries[:10]:
                index.search(query, k=10)
            timings, model = [], []
            for query in queries:
                started = time.perf_counter()
                index.search(query, k=10)
                timings.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                index.embedder.embed([query])
                model.append((time.perf_counter() - started) * 1000)
            kind = index.vectors.kind
    return {
        "p50": float(np.percentile(timings, 50)),
        "p99": float(np.percentile(timings, 99)),
        "model_p50": float(np.percentile(model, 50)),
        "kind": kind,
    }


def cold_start_seconds(runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "searcher", "--help"], check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sts", type=Path, required=True, help="the stsbenchmark directory (sts-test.csv)")
    parser.add_argument("--scifact", type=Path, required=True, help="the SciFact BEIR directory")
    parser.add_argument("--scifact-docs", type=int, default=1000)
    parser.add_argument("--precision", default="auto", help="searcher's precision (default: auto, as a user gets)")
    parser.add_argument("--latency-docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--skip", nargs="*", default=[], choices=["reference", "command", "in-process", "latency"])
    args = parser.parse_args()
    settings = load_settings(precision=args.precision)
    resolved = Embedder(settings.embedding, settings.runtime.device).precision
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"searcher precision {args.precision} ({resolved}), batches of at most {settings.runtime.batch_size} texts / "
        f"{settings.runtime.batch_tokens} tokens; sentence-transformers batch size {REFERENCE_BATCH_SIZE}"
    )
    texts_by_corpus = corpora(args.sts, args.scifact, args.scifact_docs)
    print(
        "\n| corpus | texts | sentence-transformers encode | `searcher index` command | ratio | `Index.add` | ratio "
        "| overhead |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, texts in texts_by_corpus.items():
        reference = reference_seconds(texts) if "reference" not in args.skip else float("nan")
        command = command_seconds(texts, args.precision) if "command" not in args.skip else float("nan")
        add, model = in_process(texts, settings) if "in-process" not in args.skip else (float("nan"), float("nan"))
        print(
            f"| {name} | {len(texts):,} | {reference:.1f} s, {len(texts) / reference:.0f}/s | {command:.1f} s, "
            f"{len(texts) / command:.0f}/s | {reference / command:.2f}× | {add:.1f} s, {len(texts) / add:.0f}/s | "
            f"{reference / add:.2f}× | {(add - model) / model:.1%} |",
            flush=True,
        )
    if "latency" not in args.skip:
        queries = [text for text in texts_by_corpus["STS-B test sentences"]][: args.queries]
        result = latency(args.latency_docs, queries, settings)
        print(
            f"\nQuery latency, Python API, {args.latency_docs:,} documents ({result['kind']}), k=10, {len(queries)} "
            f"queries: p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms; embedding the query alone: p50 "
            f"{result['model_p50']:.1f} ms"
        )
    if "command" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="searcher-cache-") as cache:
            first = command_seconds(["one short text"], args.precision, Path(cache))  # traces the model
            later = command_seconds(["one short text"], args.precision, Path(cache))
        print(
            f"Fixed cost of a `searcher index` run (one document: start-up, imports, model load): {later:.1f} s; "
            f"the first run with an empty cache, which traces the model: {first:.1f} s"
        )
    print(f"Cold start of `searcher --help`: {cold_start_seconds():.2f} s")


if __name__ == "__main__":
    main()
