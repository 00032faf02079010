"""Indexing speed: wall time and documents/s to index BEIR corpora with the default settings.

    python benchmarks/index_speed.py ../shared/datasets/stackfaq ../shared/datasets/scifact

Each dataset is indexed into a fresh temporary home exactly as `searcher index DATASET` does
(read, tokenize, embed, store in SQLite, save FAISS). Prints one row per dataset.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from searcher import Index, Settings, load_settings, read_records


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", help="BEIR directories (corpus.jsonl) or any searcher source")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
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
