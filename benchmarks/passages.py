"""Long documents as passages: `chunk none` (texts cut at the model's limit) against the default (`chunk auto`).

    python benchmarks/passages.py ../shared/datasets [--only stackfaq-pages,scifact] [--json results.json]

Every dataset is scored with both settings in the same run, dense search, through a real index (the path of
`searcher index` and `searcher eval`):
- stackfaq-pages (test): 32 long help pages; nDCG@10, top-1 and passage accuracy (the top hit's passage
  overlaps the span of the query's thread), vectors per page, index size, indexing time.
- scifact: the corpus is indexed once per configuration (none; auto with chunk overlaps 0, 32, 64, 96, the
  default among them) and both the train and the test split are scored from that index. The overlap is chosen
  on train (best nDCG@10) and its test figure reported.
- stackfaq, banking77 (test; its qrels are written to a temporary copy by the dataset's make_qrels.py),
  stsbenchmark (test): texts fit the limit, so none and auto must score the same and split no document.
For each dataset: indexing seconds per document with and without passages, and the ratio of that growth to
the growth in vectors (at most 1: time grows at most in proportion to the extra passages).
Prints a Markdown table per dataset, then the targets met or not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import machine  # benchmarks/machine.py: this script's own folder is first on the path

from searcher import Index, Settings, read_records
from searcher.evaluate import (
    RETRIEVAL_DEPTH,
    BeirDataset,
    StsDataset,
    evaluate_sts,
    load_beir,
    load_dataset,
    passage_accuracy,
    retrieval_metrics,
)

DATASETS = ("stackfaq-pages", "scifact", "stackfaq", "banking77", "stsbenchmark")
SCIFACT_OVERLAPS = (0, 32, 64, 96)  # swept besides the default (which is one of them)
WARM_UP_DOCUMENTS = 128  # indexed untimed before a dataset's first timed configuration
TIMING_NOISE = 0.10  # a time-growth ratio up to 1 + this is reported as "within timing noise"
PAGES_NDCG, PAGES_GAIN, PAGES_PASSAGE = 0.90, 0.25, 0.90
SCIFACT_NDCG = 0.652


def cpu_line(args: argparse.Namespace) -> str:
    return machine.cpu_line(f"device {args.device}, precision {args.precision}")


def label(config: dict[str, Any]) -> str:
    if not config["chunk"]:
        return "none"
    return f"auto ({config['chunk']} tok, overlap {config['chunk_overlap']}){' default' if config['default'] else ''}"


def index_and_score(
    corpus: Path, splits: dict[str, BeirDataset], settings: Settings, default: bool, home: Path
) -> dict[str, Any]:
    """Index CORPUS once with SETTINGS into a fresh index, then score every split's queries from it."""
    with tempfile.TemporaryDirectory(prefix="passages-", dir=home) as folder:
        index = Index.create("bench", settings, home=folder)
        try:
            spec = index.manifest.spec
            started, started_cpu = time.perf_counter(), time.process_time()
            report = index.add(read_records(corpus), settings.runtime.batch_size, settings.runtime.batch_tokens)
            add_seconds, add_cpu = time.perf_counter() - started, time.process_time() - started_cpu
            documents, vectors = len(index), index.vector_count
            result: dict[str, Any] = {
                "config": {
                    "chunk": spec.chunk,
                    "chunk_overlap": spec.chunk_overlap,
                    "precision": spec.precision,
                    "max_length": spec.max_length,
                    "default": default,
                },
                "docs": documents,
                "vectors": vectors,
                "vectors_per_doc": vectors / max(documents, 1),
                "passages": report.passages,
                "split": report.split,
                "truncated": report.truncated,
                "index_bytes": index.info()["size_bytes"],
                "seconds": {
                    "index": round(add_seconds, 2),
                    "add_report": round(report.seconds, 2),
                    "model": round(report.model_seconds, 2),
                    "per_doc": add_seconds / max(documents, 1),
                    "cpu": round(add_cpu, 2),  # process CPU time of the add, all threads
                    "cpu_per_doc": add_cpu / max(documents, 1),
                },
                "splits": {},
            }
            for split, dataset in splits.items():
                started = time.perf_counter()
                hits = index.search_many(list(dataset.queries.values()), RETRIEVAL_DEPTH, mode="dense")
                searched = time.perf_counter() - started
                rankings = {qid: [hit.id for hit in found] for qid, found in zip(dataset.queries, hits, strict=True)}
                best = {qid: found[0] for qid, found in zip(dataset.queries, hits, strict=True) if found}
                accuracy = passage_accuracy(dataset, best)
                result["splits"][split] = {
                    **retrieval_metrics(rankings, dataset.qrels),
                    **({"passage_accuracy": accuracy} if accuracy is not None else {}),
                    "queries": len(dataset.queries),
                    "query_seconds": round(searched, 2),
                }
        finally:
            index.close()
    return result


def progress(name: str, result: dict[str, Any]) -> None:
    scores = ", ".join(
        f"{split} nDCG@10 {metrics['ndcg_at_10']:.4f} top-1 {metrics['top1']:.4f}"
        + (f" passage {metrics['passage_accuracy']:.4f}" if "passage_accuracy" in metrics else "")
        for split, metrics in result["splits"].items()
    )
    print(
        f"# {name} {label(result['config'])}: {scores}; {result['vectors']:,} vectors, split {result['split']:,}, "
        f"index {result['seconds']['index']:.1f} s, precision {result['config']['precision']}",
        file=sys.stderr,
        flush=True,
    )


def growth(none: dict[str, Any], auto: dict[str, Any]) -> dict[str, float]:
    """Per-document indexing time and vectors of AUTO relative to NONE, and the one growth over the other."""
    time_ratio = auto["seconds"]["per_doc"] / none["seconds"]["per_doc"]
    cpu_ratio = auto["seconds"]["cpu_per_doc"] / none["seconds"]["cpu_per_doc"]
    model_ratio = auto["seconds"]["model"] / none["seconds"]["model"] if none["seconds"]["model"] else float("nan")
    vector_ratio = auto["vectors_per_doc"] / none["vectors_per_doc"]
    return {
        "time_ratio": time_ratio,
        "model_time_ratio": model_ratio,
        "vector_ratio": vector_ratio,
        "time_over_vectors": time_ratio / vector_ratio,
        "cpu_time_ratio": cpu_ratio,
        "cpu_time_over_vectors": cpu_ratio / vector_ratio,
        "model_time_over_vectors": model_ratio / vector_ratio,
    }


def warm_up(corpus: Path, base: Settings, home: Path) -> None:
    """Index a few of CORPUS's documents, untimed: the first forward passes of a process pay one-time costs
    (thread pools, kernel selection) that would otherwise be charged to whichever configuration runs first."""
    records = [record for _, record in zip(range(WARM_UP_DOCUMENTS), read_records(corpus), strict=False)]
    with tempfile.TemporaryDirectory(prefix="warm-up-", dir=home) as folder:
        with Index.create("warm-up", base, home=folder) as index:
            index.add(records, base.runtime.batch_size, base.runtime.batch_tokens)


def run_retrieval(
    name: str, corpus: Path, splits: dict[str, BeirDataset], base: Settings, overlaps: tuple[int, ...], home: Path
) -> dict[str, Any]:
    """none, the default auto, then auto with each overlap in OVERLAPS other than the default's."""
    warm_up(corpus, base, home)
    runs = [index_and_score(corpus, splits, base.replace(chunk="none"), False, home)]
    progress(name, runs[-1])
    runs.append(index_and_score(corpus, splits, base.replace(chunk="auto"), True, home))
    progress(name, runs[-1])
    default_overlap = runs[-1]["config"]["chunk_overlap"]
    for overlap in overlaps:
        if overlap != default_overlap:
            runs.append(index_and_score(corpus, splits, base.replace(chunk="auto", chunk_overlap=overlap), False, home))
            progress(name, runs[-1])
    none, default = runs[0], runs[1]
    return {"dataset": name, "kind": "retrieval", "runs": runs, "growth": growth(none, default)}


def run_sts(name: str, path: Path, base: Settings) -> dict[str, Any]:
    dataset = load_dataset(path, "test")
    if not isinstance(dataset, StsDataset):
        raise SystemExit(f"{path}: not an STS dataset")
    runs = []
    for chunk in ("none", "auto"):
        result = evaluate_sts(dataset, base.replace(chunk=chunk))
        runs.append(result)
        print(f"# {name} chunk {chunk}: spearman {result['spearman']:.6f}", file=sys.stderr, flush=True)
    return {"dataset": name, "kind": "sts", "runs": runs}


def print_retrieval(result: dict[str, Any]) -> None:
    runs = result["runs"]
    splits = list(runs[0]["splits"])
    has_passage = any("passage_accuracy" in run["splits"][split] for run in runs for split in splits)
    print(f"\n### {result['dataset']}\n")
    header = ["config"]
    for split in splits:
        prefix = f"{split} " if len(splits) > 1 else ""
        header += [f"{prefix}nDCG@10", f"{prefix}top-1"] + ([f"{prefix}passage acc."] if has_passage else [])
    header += ["docs split", "truncated", "vectors/doc", "index MB", "index s", "ms/doc", "CPU ms/doc", "model s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for run in runs:
        cells = [label(run["config"])]
        for split in splits:
            metrics = run["splits"][split]
            cells += [f"{metrics['ndcg_at_10']:.4f}", f"{metrics['top1']:.4f}"]
            if has_passage:
                accuracy = metrics.get("passage_accuracy")
                cells.append("–" if accuracy is None else f"{accuracy:.4f}")
        seconds = run["seconds"]
        cells += [
            f"{run['split']:,} / {run['docs']:,}",
            f"{run['truncated']:,}",
            f"{run['vectors_per_doc']:.3f}",
            f"{run['index_bytes'] / 1e6:.2f}",
            f"{seconds['index']:.1f}",
            f"{seconds['per_doc'] * 1000:.2f}",
            f"{seconds['cpu_per_doc'] * 1000:.2f}",
            f"{seconds['model']:.1f}",
        ]
        print("| " + " | ".join(cells) + " |")
    grown = result["growth"]
    print(
        f"\nauto (default) vs none: wall time per document ×{grown['time_ratio']:.3f} (CPU time ×"
        f"{grown['cpu_time_ratio']:.3f}, model time ×{grown['model_time_ratio']:.3f}), vectors per document ×"
        f"{grown['vector_ratio']:.3f}; time growth / vector growth = {grown['time_over_vectors']:.3f} "
        f"(CPU time: {grown['cpu_time_over_vectors']:.3f}, model time: {grown['model_time_over_vectors']:.3f})"
    )
    if "chosen_overlap" in result:
        print(
            f"\noverlap chosen on train (best train nDCG@10): {result['chosen_overlap']} → test nDCG@10 "
            f"{result['chosen_test_ndcg']:.4f}; shipped default overlap {result['default_overlap']} → test nDCG@10 "
            f"{result['default_test_ndcg']:.4f}"
        )


def print_sts(result: dict[str, Any]) -> None:
    print(f"\n### {result['dataset']}\n")
    print("| config | Spearman | Pearson | pairs | embed s |")
    print("|---|---|---|---|---|")
    for run in result["runs"]:
        config = run["config"]
        chunk = "none" if not config["chunk"] else f"auto ({config['chunk']} tok, overlap {config['chunk_overlap']})"
        print(
            f"| {chunk} | {run['spearman']:.6f} | {run['pearson']:.6f} | {run['pairs']:,} | "
            f"{run['seconds']['embed']:.1f} |"
        )


def choose_overlap(result: dict[str, Any]) -> None:
    """The auto run with the best train nDCG@10 (ties: the smaller overlap), and its test figure."""
    autos = [run for run in result["runs"] if run["config"]["chunk"]]
    chosen = max(autos, key=lambda run: (run["splits"]["train"]["ndcg_at_10"], -run["config"]["chunk_overlap"]))
    default = next(run for run in autos if run["config"]["default"])
    result.update(
        chosen_overlap=chosen["config"]["chunk_overlap"],
        chosen_train_ndcg=chosen["splits"]["train"]["ndcg_at_10"],
        chosen_test_ndcg=chosen["splits"]["test"]["ndcg_at_10"],
        default_overlap=default["config"]["chunk_overlap"],
        default_test_ndcg=default["splits"]["test"]["ndcg_at_10"],
    )


def targets(results: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) rows; met None: within timing noise."""
    rows: list[tuple[str, str, bool | None]] = []
    for result in results:
        name = result["dataset"]
        if result["kind"] == "sts":
            none, auto = (run["spearman"] for run in result["runs"])
            rows.append((f"{name}: Spearman unchanged", f"{none:.6f} vs {auto:.6f}", none == auto))
            continue
        none, default = result["runs"][0], result["runs"][1]
        if name == "stackfaq-pages":
            before, after = none["splits"]["test"]["ndcg_at_10"], default["splits"]["test"]["ndcg_at_10"]
            accuracy = default["splits"]["test"].get("passage_accuracy", 0.0)
            rows += [
                (f"{name}: auto nDCG@10 ≥ {PAGES_NDCG}", f"{after:.4f}", after >= PAGES_NDCG),
                (
                    f"{name}: auto nDCG@10 ≥ none + {PAGES_GAIN}",
                    f"{after:.4f} vs {before:.4f}",
                    after >= before + PAGES_GAIN,
                ),
                (f"{name}: passage accuracy ≥ {PAGES_PASSAGE}", f"{accuracy:.4f}", accuracy >= PAGES_PASSAGE),
            ]
        elif name == "scifact":
            none_test = none["splits"]["test"]["ndcg_at_10"]
            for what, overlap, value in (
                ("overlap chosen on train", result["chosen_overlap"], result["chosen_test_ndcg"]),
                ("shipped default overlap", result["default_overlap"], result["default_test_ndcg"]),
            ):
                rows += [
                    (
                        f"{name}: test nDCG@10 ≥ {SCIFACT_NDCG}, {what} ({overlap})",
                        f"{value:.4f}",
                        value >= SCIFACT_NDCG,
                    ),
                    (
                        f"{name}: test nDCG@10 above none, {what} ({overlap})",
                        f"{value:.4f} vs {none_test:.4f}",
                        value > none_test,
                    ),
                ]
        else:
            same = all(
                none["splits"]["test"][metric] == default["splits"]["test"][metric]
                for metric in ("ndcg_at_10", "top1", "recall_at_10", "recall_at_100", "mrr_at_10")
            )
            rows += [
                (f"{name}: no document split", f"{default['split']:,} of {default['docs']:,}", default["split"] == 0),
                (
                    f"{name}: metrics unchanged",
                    f"nDCG@10 {none['splits']['test']['ndcg_at_10']:.4f} vs "
                    f"{default['splits']['test']['ndcg_at_10']:.4f}",
                    same,
                ),
            ]
        ratio, cpu = result["growth"]["time_over_vectors"], result["growth"]["cpu_time_over_vectors"]
        met = True if ratio <= 1.0 else None if ratio <= 1 + TIMING_NOISE else False
        rows.append((f"{name}: time/doc growth ≤ vectors/doc growth", f"ratio {ratio:.3f} (CPU time {cpu:.3f})", met))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, help=f"directory holding {', '.join(DATASETS)}")
    parser.add_argument("--only", default=",".join(DATASETS), help=f"comma-separated among {', '.join(DATASETS)}")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", type=Path, help="also write every result here")
    args = parser.parse_args()
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(DATASETS))
    if unknown:
        parser.error(f"unknown dataset {', '.join(unknown)}: choose among {', '.join(DATASETS)}")
    print(cpu_line(args), flush=True)
    base = Settings.of(device=args.device, precision=args.precision)
    data = args.datasets
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="passages-bench-") as temporary:
        work = Path(temporary)
        for name in (name for name in DATASETS if name in wanted):
            began = time.perf_counter()
            if name == "stsbenchmark":
                results.append(run_sts(name, data / name, base))
                continue
            if name == "banking77":
                corpus = work / "banking77"
                subprocess.run([sys.executable, str(data / name / "make_qrels.py"), str(corpus)], check=True)
            else:
                corpus = data / name
            split_names = ("train", "test") if name == "scifact" else ("test",)
            splits = {split: load_beir(corpus, split) for split in split_names}
            overlaps = SCIFACT_OVERLAPS if name == "scifact" else ()
            result = run_retrieval(name, corpus, splits, base, overlaps, work)
            if name == "scifact":
                choose_overlap(result)
            result["seconds"] = round(time.perf_counter() - began, 1)
            results.append(result)
    for result in results:
        (print_sts if result["kind"] == "sts" else print_retrieval)(result)
    rows = targets(results)
    print("\n### targets\n")
    print("| target | measured | met |")
    print("|---|---|---|")
    for target, measured, met in rows:
        verdict = "yes" if met else f"within {TIMING_NOISE:.0%} timing noise" if met is None else "**no**"
        print(f"| {target} | {measured} | {verdict} |")
    print(f"\n# {time.perf_counter() - started:.0f} s in all")
    if args.json:
        summary = [{"target": t, "measured": m, "met": met} for t, m, met in rows]
        args.json.write_text(
            json.dumps({"cpu": cpu_line(args), "results": results, "targets": summary}, indent=2) + "\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
