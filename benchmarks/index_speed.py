"""Indexing speed: wall time and documents/s to index BEIR corpora with the default settings.

    python benchmarks/index_speed.py ../shared/datasets/stackfaq ../shared/datasets/scifact

Each dataset is indexed into a fresh temporary home exactly as `searcher index DATASET` does
(read, tokenize, embed, store in SQLite, save FAISS). Prints one row per dataset.

    python benchmarks/index_speed.py --datasets ../shared/datasets [--before ../wt-base] [--repeats 3]

compares, on the first 2,000 SciFact documents and on the STS-B dev and test sentences, either the whole
`searcher index` command (a new process each time: start-up, model load, reading, tokenizing, forward
passes, SQLite, FAISS) of the code in the checkout BEFORE (another worktree, say of main) with this
checkout's, or without --before this checkout's `Index.add` one step at a time (overlap=False) with its
steps overlapped, in this process with the model loaded. The two alternate run after run; each cell is
the median of the repeats. The header names the CPU's flags: compare ratios from one run, not times from
different machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import machine  # benchmarks/machine.py: this script's own folder is first on the path
import torch

from searcher import Index, Settings, load_settings, read_records
from searcher.embedder import Embedder
from searcher.evaluate import load_sts

HERE = Path(__file__).resolve().parent.parent  # this checkout
SCIFACT_DOCS = 2000


def measure(dataset: str, settings: Settings) -> dict:
    with tempfile.TemporaryDirectory(prefix="searcher-bench-") as home:
        started = time.perf_counter()
        records = list(read_records(dataset))
        index = Index.create("bench", settings, home=home)
        loaded = time.perf_counter()
        report = index.add(records, settings.runtime.batch_size, settings.runtime.batch_tokens)
        index.close()
        finished = time.perf_counter()
    return {
        "dataset": os.path.basename(os.path.normpath(dataset)),
        "documents": report.documents,
        "truncated": report.truncated,
        "load_s": loaded - started,
        "add_s": finished - loaded,
        "total_s": finished - started,
    }


def compare_corpora(datasets: Path, directory: Path, scifact_docs: int) -> dict[str, tuple[Path, int]]:
    """The first SCIFACT_DOCS SciFact documents and the STS-B dev and test sentences as JSONL sources in
    DIRECTORY: name -> (file, documents)."""
    scifact = []
    for record in read_records(datasets / "scifact" / "corpus.jsonl"):
        scifact.append({"id": record.id, "text": record.text})
        if len(scifact) == scifact_docs:
            break
    sentences = [
        text
        for split in ("sts-dev.csv", "sts-test.csv")
        for a, b, _ in load_sts(datasets / "stsbenchmark" / split)
        for text in (a, b)
    ]
    corpora = {
        f"SciFact first {len(scifact):,} docs": scifact,
        f"STS-B dev+test sentences ({len(sentences):,})": [{"id": str(i), "text": t} for i, t in enumerate(sentences)],
    }
    files = {}
    for number, (name, rows) in enumerate(corpora.items()):
        path = directory / f"corpus-{number}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        files[name] = (path, len(rows))
    return files


def command_seconds(checkout: Path, source: Path, precision: str) -> float:
    """Wall time of `searcher index SOURCE` run from CHECKOUT's code in a new process, into a new home."""
    with tempfile.TemporaryDirectory(prefix="searcher-bench-") as home:
        command = [sys.executable, "-m", "searcher", "index", str(source), "--index", "bench", "--home", home]
        environment = os.environ | {"PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        subprocess.run([*command, "--precision", precision], check=True, capture_output=True, env=environment, cwd=home)
        return time.perf_counter() - started


def add_seconds(home: str, embedder: Embedder, source: Path, overlap: bool) -> float:
    """Seconds of `Index.add` of SOURCE's records (read beforehand) into a new index of HOME, with EMBEDDER."""
    records = list(read_records(source))
    with tempfile.TemporaryDirectory(prefix="index-", dir=home) as path, Index.create(path, embedder=embedder) as index:
        started = time.perf_counter()
        index.add(records, overlap=overlap)
        return time.perf_counter() - started


def compare(before: Path | None, datasets: Path, repeats: int, precision: str, scifact_docs: int) -> None:
    """Docs/s of the whole `searcher index` command, BEFORE's code against this checkout's; without BEFORE,
    this checkout's `Index.add` one step at a time against overlapped, in this process, the model loaded."""
    print(machine.cpu_line(f"precision {precision}, {repeats} runs each, alternating"))
    with tempfile.TemporaryDirectory(prefix="searcher-bench-") as home:
        runs: dict[str, Callable[[Path], float]]
        if before is None:
            embedder = Index.create("warm", load_settings(precision=precision), home=home).embedder
            runs = {
                "one step at a time": lambda source: add_seconds(home, embedder, source, overlap=False),
                "overlapped": lambda source: add_seconds(home, embedder, source, overlap=True),
            }
            print(f"# `Index.add` in this process, the model loaded, at {HERE} ({commit(HERE)})")
        else:
            runs = {
                "before": lambda source: command_seconds(before, source, precision),
                "after": lambda source: command_seconds(HERE, source, precision),
            }
            print(f"# the whole command; before: {before.resolve()} ({commit(before)}), after: {HERE} ({commit(HERE)})")
        first, second = runs
        print(f"| corpus | docs | {first} s | docs/s | {second} s | docs/s | ratio |")
        print("|---|---|---|---|---|---|---|")
        for name, (source, documents) in compare_corpora(datasets, Path(home), scifact_docs).items():
            times: dict[str, list[float]] = {version: [] for version in runs}
            for _ in range(repeats):
                for version, seconds in runs.items():
                    times[version].append(seconds(source))
            median = {version: statistics.median(seconds) for version, seconds in times.items()}
            print(
                f"| {name} | {documents:,} | {median[first]:.1f} | {documents / median[first]:,.1f} | "
                f"{median[second]:.1f} | {documents / median[second]:,.1f} | {median[first] / median[second]:.3f}× |",
                flush=True,
            )
            print(f"# runs (s): {json.dumps({v: [round(t, 2) for t in ts] for v, ts in times.items()})}", flush=True)


def commit(checkout: Path) -> str:
    command = ["git", "-C", str(checkout), "describe", "--always", "--dirty"]
    return subprocess.run(command, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", help="BEIR directories (corpus.jsonl) or any searcher source")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare this one's with")
    parser.add_argument(
        "--datasets", dest="datasets_dir", type=Path, help="the folder of scifact/ and stsbenchmark/: compare"
    )
    parser.add_argument("--repeats", type=int, default=3, help="with --datasets: runs of each")
    parser.add_argument("--scifact-docs", type=int, default=SCIFACT_DOCS, help="with --datasets: SciFact documents")
    args = parser.parse_args()
    if args.datasets_dir:
        compare(args.before, args.datasets_dir, args.repeats, args.precision, args.scifact_docs)
        return
    if not args.datasets:
        parser.error("name at least one dataset, or --datasets")
    settings = load_settings(device=args.device, precision=args.precision)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, batches of at most {settings.runtime.batch_size} texts and "
        f"{settings.runtime.batch_tokens} tokens, precision {args.precision}"
    )
    print(f"{'dataset':<14}{'docs':>8}{'truncated':>11}{'model load s':>14}{'index s':>10}{'docs/s':>9}{'total s':>9}")
    for dataset in args.datasets:
        row = measure(dataset, settings)
        print(
            f"{row['dataset']:<14}{row['documents']:>8,}{row['truncated']:>11,}{row['load_s']:>14.1f}"
            f"{row['add_s']:>10.1f}{row['documents'] / row['add_s']:>9.1f}{row['total_s']:>9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
