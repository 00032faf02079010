"""Documents/s of `searcher index` on the local path against Ray with 1 and 2 actors, whole commands.

    python benchmarks/ray_scaling.py ../shared/datasets/scifact [--documents 1000] [--actors 1 2] [--shard-size 1000]

Each run is a fresh `searcher index` process into a new index over the same first --documents documents of
a BEIR corpus (0: all), default settings (--shard-size is passed to the Ray runs: a shard is one actor
call, so a corpus of fewer shards than actors leaves actors idle); the Ray runs start a local cluster for
the command (as a user without a cluster gets) and stop it after. Then the last Ray index is checked
against the local one: same ids, largest vector difference (bf16 where the CPU has it), and the test
split's nDCG@10 and recall@100 of both (over the indexed documents). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from searcher import Index
from searcher.evaluate import load_beir, retrieval_metrics


def run(source: Path, home: str, name: str, extra: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "searcher", "index", str(source), "--index", name, "--home", home, *extra],
        check=True,
        capture_output=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    return time.perf_counter() - started


def by_document(index: Index) -> dict[tuple[str, str | None, tuple[int, int] | None], np.ndarray]:
    return {(document, owner.phrasing, owner.span): vector for document, owner, vector in index.stored_vectors()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="a BEIR directory (corpus.jsonl, queries.jsonl)")
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shard-size", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="searcher-ray-") as home:
        source = Path(home) / "documents.jsonl"
        with open(args.corpus / "corpus.jsonl", encoding="utf-8") as corpus:
            lines = [line for line in corpus if line.strip()]
        lines = lines[: args.documents or len(lines)]
        source.write_text("".join(lines), encoding="utf-8")
        rows = [("local", run(source, home, "local", []))]
        for actors in args.actors:
            rows.append(
                (
                    f"ray, {actors} actor{'s' if actors > 1 else ''}",
                    run(
                        source,
                        home,
                        f"ray{actors}",
                        ["--engine", "ray", "--actors", str(actors), "--shard-size", str(args.shard_size)],
                    ),
                )
            )
        dataset = load_beir(args.corpus, "test")
        with Index.open("local", home) as local, Index.open(f"ray{args.actors[-1]}", home) as distributed:
            expected, got = by_document(local), by_document(distributed)
            difference = (
                max(float(np.abs(got[key] - expected[key]).max()) for key in expected)
                if got.keys() == expected.keys()
                else float("inf")
            )
            scores = [
                retrieval_metrics(
                    {qid: [hit.id for hit in index.search(text, k=100)] for qid, text in dataset.queries.items()},
                    dataset.qrels,
                )
                for index in (local, distributed)
            ]
            precision = local.manifest.spec.precision
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, precision {precision}; "
        f"first {len(lines):,} documents of {args.corpus.name}; "
        f"whole `searcher index` commands (a Ray run starts and stops a local cluster; "
        f"shards of {args.shard_size:,} documents)"
    )
    print("\n| engine | seconds | documents/s | vs local |")
    print("|---|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {len(lines) / seconds:.1f} | {rows[0][1] / seconds:.2f}× |")
    print(
        f"\nRay ({args.actors[-1]} actors) against local: same ids {got.keys() == expected.keys()}, "
        f"largest vector difference {difference:.1e}; "
        f"nDCG@10 {scores[1]['ndcg_at_10']:.4f} against {scores[0]['ndcg_at_10']:.4f}, "
        f"recall@100 {scores[1]['recall_at_100']:.4f} against {scores[0]['recall_at_100']:.4f} "
        f"({len(dataset.queries)} test queries)"
    )


if __name__ == "__main__":
    main()
