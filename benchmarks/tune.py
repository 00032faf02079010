"""What `searcher tune` gains, and where it does not: the base and the tuned model on queries tuning never saw.

    python benchmarks/tune.py ../shared/datasets [--only stackfaq-self,banking77] [--epochs N] [--max-minutes M]

Each run tunes the bundled model in a process of its own (for its time and peak memory), then scores base and
tuned model through a real index (the path of `searcher eval`), dense search, on test queries:
- stackfaq-self: StackFAQ's own title ↔ answer pairs, no labels; all test queries.
- stackfaq-feedback: those, plus the test queries whose id hashes even ↔ their answers (as a desk's feedback
  would give); scored on the other half only.
- banking77: each training utterance ↔ another training utterance of the same intent (seeded); the test
  utterances (top-1 is kNN intent accuracy; qrels written to a temporary copy by the dataset's make_qrels.py).
- scifact-self: title ↔ abstract; scifact-train: plus `--split train`; both scored on the test split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNS = ("stackfaq-self", "stackfaq-feedback", "banking77", "scifact-self", "scifact-train")


def tune_in_process(arguments: dict[str, Any]) -> None:
    """One tuning run, in this (child) process: prints its report and peak memory as JSON."""
    from searcher import Hyperparameters, tune

    epochs = arguments.pop("epochs")
    report = tune(**arguments, hyperparameters=Hyperparameters(epochs=epochs), force=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report.as_dict() | {"peak_rss_mb": round(peak)}))


def run_tune(arguments: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    output = subprocess.run(
        [sys.executable, __file__, "--run-one", json.dumps(arguments)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1]) | {"wall_seconds": round(time.perf_counter() - started, 1)}


def scores(dataset_dir: Path, model: str | None) -> dict[str, float]:
    from searcher import Settings
    from searcher.evaluate import evaluate_retrieval, load_beir

    result = evaluate_retrieval(load_beir(dataset_dir, "test"), Settings.of(model=model), ["dense"])[0]
    return {"top1": result["top1"], "ndcg_at_10": result["ndcg_at_10"], "queries": result["queries"]}


def even_hash(query_id: str) -> bool:
    return int(hashlib.sha256(query_id.encode()).hexdigest(), 16) % 2 == 0


def feedback_split(stackfaq: Path, work: Path) -> tuple[Path, Path]:
    """A pairs file of the even-hash test queries, and a BEIR copy judging only the odd-hash ones."""
    texts = {row["_id"]: row["text"] for row in map(json.loads, (stackfaq / "queries.jsonl").open(encoding="utf-8"))}
    rows = (stackfaq / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    held = work / "stackfaq-odd"
    (held / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (held / name).symlink_to((stackfaq / name).resolve())
    judged = [row.split("\t") for row in rows[1:] if row.strip()]
    (held / "qrels" / "test.tsv").write_text(
        "\n".join([rows[0], *("\t".join(row) for row in judged if not even_hash(row[0]))]) + "\n", encoding="utf-8"
    )
    pairs = work / "stackfaq-even-pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"query": texts[query], "id": document}) + "\n"
            for query, document, grade in judged
            if even_hash(query) and int(grade) > 0
        ),
        encoding="utf-8",
    )
    return pairs, held


def intent_pairs(banking: Path, work: Path) -> Path:
    """Each training utterance paired with another of its intent, chosen with a fixed seed."""
    rows = [json.loads(line) for line in (banking / "corpus.jsonl").open(encoding="utf-8")]
    by_intent: dict[str, list[str]] = {}
    for row in rows:
        by_intent.setdefault(row["metadata"]["intent"], []).append(row["_id"])
    rng = random.Random(77)
    pairs = work / "banking77-pairs.jsonl"
    with pairs.open("w", encoding="utf-8") as handle:
        for row in rows:
            others = [doc for doc in by_intent[row["metadata"]["intent"]] if doc != row["_id"]]
            handle.write(json.dumps({"query": row["text"], "id": rng.choice(others)}) + "\n")
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, nargs="?", help="directory holding stackfaq, banking77, scifact")
    parser.add_argument("--only", default=",".join(RUNS), help=f"comma-separated runs among {', '.join(RUNS)}")
    parser.add_argument("--epochs", type=int, help="passes over the pairs (default: searcher tune's)")
    parser.add_argument("--max-minutes", type=float, help="stop each run's training after this long")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        tune_in_process(json.loads(args.run_one))
        return
    import torch

    flags = sorted({flag for flag in Path("/proc/cpuinfo").read_text().split() if flag.startswith(("avx512", "amx"))})
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, {' '.join(flags) or 'no AVX-512'}, torch {torch.__version__}, "
        f"device {args.device}, epochs {args.epochs or 'default'}, max minutes {args.max_minutes or 'none'}",
        flush=True,
    )
    data = args.datasets
    results = []
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as temporary:
        work = Path(temporary)
        base_common = {"epochs": args.epochs, "device": args.device, "max_minutes": args.max_minutes}
        runs: dict[str, tuple[dict[str, Any], Path]] = {}
        wanted = args.only.split(",")
        if "stackfaq-self" in wanted:
            runs["stackfaq-self"] = ({"source": str(data / "stackfaq")}, data / "stackfaq")
        if "stackfaq-feedback" in wanted:
            pairs, held = feedback_split(data / "stackfaq", work)
            runs["stackfaq-feedback"] = ({"source": str(data / "stackfaq"), "pairs_files": [str(pairs)]}, held)
        if "banking77" in wanted:
            banking = work / "banking77"
            subprocess.run([sys.executable, str(data / "banking77" / "make_qrels.py"), str(banking)], check=True)
            runs["banking77"] = ({"source": str(banking), "pairs_files": [str(intent_pairs(banking, work))]}, banking)
        if "scifact-self" in wanted:
            runs["scifact-self"] = ({"source": str(data / "scifact")}, data / "scifact")
        if "scifact-train" in wanted:
            runs["scifact-train"] = ({"source": str(data / "scifact"), "split": "train"}, data / "scifact")
        base_scores: dict[Path, dict[str, float]] = {}
        for name, (arguments, scored_on) in runs.items():
            out = work / f"model-{name}"
            report = run_tune(base_common | arguments | {"out": str(out)})
            if scored_on not in base_scores:
                base_scores[scored_on] = scores(scored_on, None)
            before, after = base_scores[scored_on], scores(scored_on, str(out))
            result = {"run": name, "report": report, "before": before, "after": after}
            results.append(result)
            print(f"# {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    print("\n| run | training pairs | epochs, steps | train s | peak RSS | gate (held back) | top-1 | nDCG@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        report, before, after = result["report"], result["before"], result["after"]
        gate = report["gate"]
        verdict = "refused" if any(gate["after"][m] < gate["before"][m] - 0.005 for m in gate["before"]) else "passed"
        print(
            f"| {result['run']} | {' + '.join(f'{n:,} {k}' for k, n in report['pairs'].items() if n)} "
            f"| {report['hyperparameters']['epochs']}, {report['steps']} | {report['seconds']['train']:.0f} "
            f"| {report['peak_rss_mb']:,} MB "
            f"| {verdict}: top-1 {gate['before']['top1']:.3f} → {gate['after']['top1']:.3f} "
            f"| {before['top1']:.4f} → **{after['top1']:.4f}** ({after['queries']:,} q) "
            f"| {before['ndcg_at_10']:.4f} → **{after['ndcg_at_10']:.4f}** |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
