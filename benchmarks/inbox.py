"""The support desk's loop on StackFAQ: an FAQ with gaps, its customers' questions replayed through the HTTP
API with the question log on, then `searcher inbox`; and `searcher audit` on the whole FAQ.

    python benchmarks/inbox.py ../shared/datasets [--removed 5,17,...] [--json results.json]

1. Gaps: StackFAQ (../shared/datasets/stackfaq: 125 threads, 719 answers, 1,249 rephrased questions) indexed
   without --removed threads (default: every 12th thread from thread 5, a fixed choice; the inbox's settings
   were chosen on other random choices of 10 threads), by `searcher index` with default settings (bundled
   model). `searcher calibrate` on the questions of the remaining threads (judged against their answers)
   stores the "good match" threshold and the inbox's "not covered" cut.
2. Replay: `searcher serve --log-queries` on a free loopback port; all 1,249 questions (the removed threads'
   too) sent as dense searches by 8 clients, then the server is stopped (its log writer flushes).
3. Inbox: `searcher inbox NAME --json`. Recall: share of the removed threads' questions in the inbox (target
   ≥ 0.70); precision: share of inbox questions from removed threads (≥ 0.60); purity: share of inbox
   questions whose group's majority thread is their own (≥ 0.80); of the 10 biggest groups, how many have a
   removed thread as majority (all 10). For comparison, plain cuts on each question's logged best score:
   the calibrated threshold (under it = "no good match"), and 0.50 / 0.55.
4. Audit: the whole StackFAQ indexed and all its questions logged (in this process, through the library),
   `searcher audit NAME --json`: confusable pairs (how many join two
   answers of one thread, i.e. the same question: StackFAQ repeats a thread's title before each of its answers),
   a sample of those joining two threads with their titles, and entries their own title does not find first.

Exit status 0 whether targets are met or not; the table says.
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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import machine  # benchmarks/machine.py: this script's own folder is first on the path
from http_load import Server

from searcher import Index
from searcher.querylog import QueryLog

REMOVED = tuple(range(5, 125, 12))  # 10 threads: 5, 17, ..., 113
CLIENTS = 8
TARGETS = {"recall": 0.70, "precision": 0.60, "purity": 0.80}
CONFUSABLE_SAMPLE = 10
LOOSER_SIMILARITY = 0.8


def searcher(*arguments: str, home: Path) -> str:
    command = [sys.executable, "-m", "searcher", *arguments, "--home", str(home)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gapped_copy(source: Path, removed: set[int], target: Path) -> None:
    """SOURCE (BEIR) without REMOVED threads' answers, with the questions and judgments of the others only."""
    (target / "qrels").mkdir(parents=True)
    kept = [doc for doc in read_jsonl(source / "corpus.jsonl") if doc["metadata"]["thread"] not in removed]
    questions = [query for query in read_jsonl(source / "queries.jsonl") if query["metadata"]["thread"] not in removed]
    (target / "corpus.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in kept), encoding="utf-8")
    (target / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    asked = {query["_id"] for query in questions}
    lines = (source / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    kept_lines = [lines[0], *(line for line in lines[1:] if line.split("\t")[0] in asked)]
    (target / "qrels" / "test.tsv").write_text("\n".join(kept_lines) + "\n", encoding="utf-8")


def replay(home: Path, name: str, questions: list[str]) -> dict[str, Any]:
    """QUESTIONS as dense searches through `searcher serve --log-queries`, CLIENTS at a time; then stopped."""
    server = Server(str(home), [name], None, ["--log-queries"])
    try:
        started = time.perf_counter()
        with httpx.Client(base_url=server.base, timeout=60) as client, ThreadPoolExecutor(CLIENTS) as pool:
            statuses = list(
                pool.map(
                    lambda text: client.post("/v1/search", json={"index": name, "query": text}).status_code, questions
                )
            )
        seconds = time.perf_counter() - started
    finally:
        server.close()  # its log writer stores what is queued before the process ends
    return {"sent": len(questions), "errors": sum(status != 200 for status in statuses), "seconds": seconds}


def inbox_scores(report: dict[str, Any], thread_of: dict[str, int], removed: set[int]) -> dict[str, Any]:
    gap_questions = sum(thread in removed for thread in thread_of.values())
    groups = report["groups"]
    listed = [question for group in groups for question in group["queries"]]
    from_gaps = sum(thread_of[question] in removed for question in listed)
    majorities = [Counter(thread_of[question] for question in group["queries"]).most_common(1)[0] for group in groups]
    return {
        "groups": len(groups),
        "questions": len(listed),
        "recall": from_gaps / gap_questions,
        "precision": from_gaps / len(listed) if listed else 0.0,
        "purity": sum(count for _, count in majorities) / len(listed) if listed else 0.0,
        "biggest_10_with_a_removed_majority": sum(thread in removed for thread, _ in majorities[:10]),
        "biggest_10": [
            {
                "size": group["size"],
                "majority_thread": thread,
                "removed": thread in removed,
                "suggestion": group["suggestion"],
            }
            for group, (thread, _) in zip(groups[:10], majorities[:10], strict=True)
        ],
    }


def plain_cuts(index_path: Path, thread_of: dict[str, int], removed: set[int], cuts: dict[str, float]) -> list[dict]:
    """Recall and precision of 'best logged score under CUT' for each of CUTS, as the issue's reference did."""
    with QueryLog.open(index_path) as log:
        best = [(entry.query, entry.best_score) for entry in log.entries()]
    gap_questions = sum(thread in removed for thread in thread_of.values())
    rows = []
    for label, cut in cuts.items():
        under = [query for query, score in best if score is None or score < cut]
        from_gaps = sum(thread_of[query] in removed for query in under)
        rows.append(
            {
                "cut": label,
                "value": cut,
                "questions": len(under),
                "recall": from_gaps / gap_questions,
                "precision": from_gaps / len(under) if under else 0.0,
            }
        )
    return rows


def audit_run(source: Path, home: Path, questions: list[str]) -> dict[str, Any]:
    searcher("index", str(source), "--index", "full", home=home)
    with Index.open("full", home) as index:  # the questions logged, so that "never matched" means something
        index.search_many(questions, 1, log=True)
    report = json.loads(searcher("audit", "full", "--json", home=home))
    # Past the default cut every pair joins two answers of one thread; a lower one shows what lies across threads.
    looser = json.loads(searcher("audit", "full", "--json", "--min-similarity", str(LOOSER_SIMILARITY), home=home))
    corpus = {doc["_id"]: doc for doc in read_jsonl(source / "corpus.jsonl")}
    thread = {doc_id: doc["metadata"]["thread"] for doc_id, doc in corpus.items()}

    def across(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [pair for pair in pairs if thread[pair["a"]] != thread[pair["b"]]]

    return {
        "confusable": len(report["confusable"]),
        "across_threads": len(across(report["confusable"])),
        "looser_confusable": len(looser["confusable"]),
        "looser_across_threads": len(across(looser["confusable"])),
        "across_sample": [
            pair | {"title_a": corpus[pair["a"]]["title"], "title_b": corpus[pair["b"]]["title"]}
            for pair in across(looser["confusable"])[:CONFUSABLE_SAMPLE]
        ],
        "never_matched": len(report["never_matched"]),
        "not_self_retrieved": report["not_self_retrieved"],
        "entries": len(corpus),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, help="the folder holding stackfaq/")
    parser.add_argument("--removed", default=",".join(map(str, REMOVED)), help="thread numbers left out of the FAQ")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    source = args.datasets / "stackfaq"
    removed = {int(number) for number in args.removed.split(",")}
    print(machine.cpu_line(f"Python {platform.python_version()}"), flush=True)
    questions = read_jsonl(source / "queries.jsonl")
    thread_of = {query["text"]: query["metadata"]["thread"] for query in questions}
    with tempfile.TemporaryDirectory(prefix="searcher-inbox-") as scratch:
        home = Path(scratch) / "home"
        gapped = Path(scratch) / "stackfaq-gapped"
        gapped_copy(source, removed, gapped)
        searcher("index", str(gapped), "--index", "gap", home=home)
        calibrated = searcher("calibrate", str(gapped), "--index", "gap", home=home).strip()
        manifest = json.loads(searcher("info", "gap", "--json", home=home))["manifest"]
        replayed = replay(home, "gap", [query["text"] for query in questions])
        started = time.perf_counter()
        report = json.loads(searcher("inbox", "gap", "--json", home=home))
        inbox_seconds = time.perf_counter() - started
        scores = inbox_scores(report, thread_of, removed)
        threshold = manifest["thresholds"]["dense"]
        plain = plain_cuts(home / "gap", thread_of, removed, {"threshold": threshold, "0.50": 0.50, "0.55": 0.55})
        audit = audit_run(source, Path(scratch) / "full", [query["text"] for query in questions])
    not_covered = manifest["calibration"]["dense"]["not_covered"]
    print(f"\nRemoved threads: {sorted(removed)}; {sum(t in removed for t in thread_of.values())} of their questions")
    print(f'calibrate: {calibrated}\n"not covered" cut: {not_covered:.4f}')
    print(f"replay: {replayed['sent']} questions, {replayed['errors']} errors, {replayed['seconds']:.1f} s")
    print(f"inbox: {scores['groups']} groups, {scores['questions']} questions, {inbox_seconds:.1f} s (the command)")
    print("\n| measure | inbox | target | met |\n|---|---|---|---|")
    for measure, target in TARGETS.items():
        print(
            f"| {measure} | {scores[measure]:.3f} | ≥ {target:.2f} | {'yes' if scores[measure] >= target else 'no'} |"
        )
    majority = scores["biggest_10_with_a_removed_majority"]
    print(
        f"| biggest 10 groups with a removed thread as majority | {majority} of {min(10, scores['groups'])} | 10 | "
        f"{'yes' if majority == 10 else 'no'} |"
    )
    print("\nPlain cuts on each question's logged best score, for comparison:")
    print("| cut | questions under it | recall | precision |\n|---|---|---|---|")
    for row in plain:
        print(
            f"| {row['cut']} ({row['value']:.3f}) | {row['questions']} | {row['recall']:.3f} | {row['precision']:.3f} |"
        )
    print(
        "\nThe 10 biggest groups: "
        + "; ".join(
            f"{group['size']} (thread {group['majority_thread']}{', removed' if group['removed'] else ''}, "
            f"{group['suggestion']})"
            for group in scores["biggest_10"]
        )
    )
    print(
        f"\nAudit of the whole StackFAQ ({audit['entries']} entries): {audit['confusable']} confusable pairs "
        f"(similarity ≥ 0.9), {audit['across_threads']} of them across threads (the others: two answers of one "
        f"thread); at ≥ {LOOSER_SIMILARITY}: {audit['looser_confusable']} pairs, {audit['looser_across_threads']} "
        f"across threads. {audit['never_matched']} entries never found first by one of the 1,249 questions; "
        f"{len(audit['not_self_retrieved'])} not found first by their own title: {audit['not_self_retrieved'][:10]}"
    )
    print("The most alike pairs across threads, with their threads' titles:")
    for pair in audit["across_sample"]:
        print(f"  {pair['score']:.3f}  {pair['a']} {pair['title_a'][:60]!r}  ~  {pair['b']} {pair['title_b'][:60]!r}")
    if args.json:
        results = {
            "removed": sorted(removed),
            "calibrate": calibrated,
            "not_covered": not_covered,
            "replay": replayed,
            "inbox": scores,
            "inbox_report": report,
            "plain_cuts": plain,
            "audit": audit,
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
