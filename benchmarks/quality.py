"""Retrieval and similarity quality of the default model across layers, poolings and search modes.

    python benchmarks/quality.py ../shared/datasets [--json results.json]

Datasets (read from DATASETS_DIR): stsbenchmark (test), stackfaq (test), banking77 (test; its qrels are
written to a temporary copy by the dataset's own make_qrels.py), scifact (test). Every layer/pooling
combination is scored in dense mode; the default combination (layer -1, mean: the model's trained
pooling) is also scored in keyword and hybrid mode. Prints two Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from searcher import Settings
from searcher.evaluate import evaluate, load_dataset, sweep

LAYERS = (-1, -2)
POOLINGS = ("mean", "cls", "max")
DEFAULT = (-1, "mean")
RETRIEVAL = ("scifact", "stackfaq", "banking77")  # table column order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, help="directory holding stsbenchmark, stackfaq, banking77, scifact")
    parser.add_argument("--json", type=Path, help="also write every result here")
    args = parser.parse_args()
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="banking77-") as banking:
        subprocess.run([sys.executable, str(args.datasets / "banking77" / "make_qrels.py"), banking], check=True)
        paths = {
            "stsbenchmark": args.datasets / "stsbenchmark",
            "banking77": Path(banking),
            "stackfaq": args.datasets / "stackfaq",
            "scifact": args.datasets / "scifact",
        }
        for name, path in paths.items():
            dataset = load_dataset(path, "test")
            for settings in sweep(LAYERS, POOLINGS, Settings()):
                modes = (
                    ("dense", "keyword", "hybrid")
                    if (settings.embedding.layer, settings.embedding.pooling) == DEFAULT
                    else ("dense",)
                )
                started = time.perf_counter()
                for result in evaluate(dataset, [settings], modes):
                    result["dataset"] = name
                    results.append(result)
                    print(
                        f"# {name} {_label(result)}: {_headline(result)} ({time.perf_counter() - started:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_tables(results)


def _label(result: dict) -> str:
    config = result["config"]
    return f"layer {config['layer']} {config['pooling']} {config.get('mode', '')}".strip()


def _headline(result: dict) -> str:
    if "spearman" in result:
        return f"spearman {result['spearman']:.4f}"
    return f"ndcg@10 {result['ndcg_at_10']:.4f} top1 {result['top1']:.4f}"


def _find(results: list[dict], dataset: str, layer: int, pooling: str, mode: str = "dense") -> dict:
    return next(
        r
        for r in results
        if r["dataset"] == dataset
        and r["config"]["layer"] == layer
        and r["config"]["pooling"] == pooling
        and r["config"].get("mode", "dense") == mode
    )


def print_tables(results: list[dict]) -> None:
    print(
        "| layer | pooling | SciFact nDCG@10 | StackFAQ nDCG@10 | Banking77 top-1 | Banking77 nDCG@10 "
        "| STS-B Spearman |"
    )
    print("|---|---|---|---|---|---|---|")
    for layer in LAYERS:
        for pooling in POOLINGS:
            scifact, stackfaq, banking = (_find(results, name, layer, pooling) for name in RETRIEVAL)
            sts = _find(results, "stsbenchmark", layer, pooling)
            marker = " (auto)" if (layer, pooling) == DEFAULT else ""
            print(
                f"| {layer} | {pooling}{marker} | {scifact['ndcg_at_10']:.4f} | {stackfaq['ndcg_at_10']:.4f} | "
                f"{banking['top1']:.4f} | {banking['ndcg_at_10']:.4f} | {sts['spearman']:.4f} |"
            )
    print()
    print("| mode | SciFact nDCG@10 | StackFAQ nDCG@10 | Banking77 top-1 | Banking77 nDCG@10 |")
    print("|---|---|---|---|---|")
    for mode in ("dense", "keyword", "hybrid"):
        scifact, stackfaq, banking = (_find(results, name, *DEFAULT, mode) for name in RETRIEVAL)
        print(
            f"| {mode} | {scifact['ndcg_at_10']:.4f} | {stackfaq['ndcg_at_10']:.4f} | {banking['top1']:.4f} | "
            f"{banking['ndcg_at_10']:.4f} |"
        )


if __name__ == "__main__":
    main()
