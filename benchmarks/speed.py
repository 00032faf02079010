"""Indexing speed beside sentence-transformers, txtai and a hand-written sentence-transformers + FAISS script, the
overhead around the model, and query latency; then the targets of issue 21, "Indexing at the speed of the
hardware", met or not.

    python benchmarks/speed.py --sts ../shared/datasets/stsbenchmark --scifact ../shared/datasets/scifact
        [--repeats 3] [--peers-venv DIR] [--skip latency] [--json results.json]

A quick check of the script itself: --sts-from 64 --sts-to 192 --scifact-from 16 --scifact-docs 48 --repeats 1
--latency-docs 2000 --queries 20. On 2 cores the full run takes about 15 minutes with --skip latency, most of it
in the peers' processes.

The peers never enter the project's environment: they run in a venv of their own that this script makes (and
reuses) at --peers-venv, with the versions pinned in PEER_TORCH and PEER_PACKAGES, printed in the header.

1. Whole processes. Every run is a new process on a JSONL file of texts, timed from start to exit, so start-up,
   imports, model load, tokenization and storage all count. Searcher's is the whole `searcher index` command
   (this interpreter, default settings but --precision and --chunk: by default a long text is split into
   passages, a vector each, where the peers cut it at the model's limit). The peers' are the smallest scripts a
   user would write (PEER_SCRIPTS): sentence-transformers `SentenceTransformer(model, device="cpu").encode(texts,
   batch_size=64)`; the same, normalized, into a `faiss.IndexFlatIP` written to disk and the texts into an SQLite
   table; and txtai `Embeddings(path=model, content=True)`, `index`, `save`: its defaults, with the texts stored
   in SQLite as searcher stores them and its default vector structure (Faiss, flat up to 5,000 vectors), the
   configuration closest to what `searcher index` does. All use the bundled model's directory and the same
   thread count (OMP_NUM_THREADS), offline. Each run is repeated --repeats times, searcher and peers in turn;
   medians. The texts: the distinct sentences of STS-B dev and test (duplicates would let a cache of texts win),
   the first --sts-from of them and all (--sts-to); the first --scifact-from and --scifact-docs documents of
   SciFact's corpus.jsonl; and one short text.
2. Targets. Marginal throughput, (N2 − N1) / (t2 − t1) between the two sizes of a corpus, so that start-up cancels
   on both sides: searcher ≥ 3.5× sentence-transformers' `encode` on STS-B sentences and ≥ 3× on SciFact
   documents. Whole process on --scifact-docs documents: ≥ 4× as fast as txtai and ≥ 2.5× the sentence-
   transformers + FAISS script. Fixed cost, the one-text run: ≤ 0.6× sentence-transformers' one-text script.
3. In this process: the largest STS-B and SciFact sets through `Index.add`, the model already loaded (what a
   long-running indexer or server sees), and its overhead: everything but the model's forward passes
   (tokenization, batching, SQLite, FAISS), as a share of the forward time.
4. Latency: an index of --latency-docs synthetic documents (random clustered vectors stored through
   `Index.add_embedded`, as vectors embedded elsewhere, into the default vector structure: auto, so IVF-PQ
   past 50,000 vectors; building it takes seconds, not an hour of embedding), then --queries real sentences
   through `Index.search`, warm; p50 and p99 in milliseconds, with the model's share. Also the cold start
   of `searcher --help`. Searcher's processes share a model cache of their own, empty at first: its first run
   (one short text, reported apart) traces the model, and every timed run after it finds the trace cached,
   as a user's second run does.

The model's TFLOP/s beside the machine's matmul rate is `benchmarks/model_flops.py`.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import machine  # benchmarks/machine.py: this script's own folder is first on the path
import numpy as np
import torch

from searcher import Index, Record, Settings, load_settings
from searcher.config import BUNDLED_MODEL
from searcher.embedder import EmbeddedDocuments, Embedder, locate_model
from searcher.evaluate import load_sts
from searcher.sources import read_records

# A CPU build pip finds on local disk here; unpinned, pip would fetch a CUDA build of several GB. First, so that
# the packages after it keep it.
PEER_TORCH = "torch==2.13.0"
PEER_PACKAGES = ("sentence-transformers==6.2.0", "txtai==9.14.0", "faiss-cpu==1.15.1")
PEER_VERSIONS = ("torch", "transformers", "sentence-transformers", "txtai", "faiss-cpu")
REFERENCE_BATCH_SIZE = 64
LATENCY_SHARD = 10_000  # synthetic documents stored per `add_embedded` shard (one SQLite transaction each)
ONE_TEXT = "one short text"

# Targets of the issue.
STS_MARGINAL = 3.5  # searcher's marginal texts/s over sentence-transformers' encode, STS-B sentences
SCIFACT_MARGINAL = 3.0  # the same, SciFact documents
TXTAI_WHOLE = 4.0  # txtai's seconds over searcher's, whole process on --scifact-docs documents
ST_FAISS_WHOLE = 2.5  # the sentence-transformers + FAISS script's seconds over searcher's, the same
FIXED_COST = 0.6  # searcher's seconds over sentence-transformers' one-text script, at most

# Each peer script gets the model directory, a JSONL file of {"id", "text"} and an empty folder for its output.
PEER_PRELUDE = """import json, sys
model_dir, source, out = sys.argv[1:]
texts = [json.loads(line)["text"] for line in open(source, encoding="utf-8")]
"""
ST, TXTAI, ST_FAISS = "sentence-transformers", "txtai", "sentence-transformers + FAISS"
PEER_SCRIPTS = {
    ST: PEER_PRELUDE
    + f"""from sentence_transformers import SentenceTransformer
SentenceTransformer(model_dir, device="cpu").encode(texts, batch_size={REFERENCE_BATCH_SIZE})
""",
    TXTAI: PEER_PRELUDE
    + """from txtai import Embeddings
embeddings = Embeddings(path=model_dir, content=True)
embeddings.index(texts)
embeddings.save(out + "/txtai")
""",
    ST_FAISS: PEER_PRELUDE
    + f"""import sqlite3
import faiss
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(model_dir, device="cpu")
vectors = model.encode(texts, batch_size={REFERENCE_BATCH_SIZE}, normalize_embeddings=True)
index = faiss.IndexFlatIP(vectors.shape[1])
index.add(vectors)
faiss.write_index(index, out + "/vectors.faiss")
with sqlite3.connect(out + "/texts.sqlite") as db:
    db.execute("CREATE TABLE texts (id INTEGER PRIMARY KEY, text TEXT)")
    db.executemany("INSERT INTO texts VALUES (?, ?)", enumerate(texts))
""",
}
VERSIONS_SCRIPT = f"""import json
from importlib.metadata import version
print(json.dumps({{name: version(name) for name in {PEER_VERSIONS!r}}}))
"""


def sts_sentences(sts: Path) -> list[str]:
    """The distinct sentences of STS-B dev and test, in file order."""
    pairs = load_sts(sts / "sts-dev.csv") + load_sts(sts / "sts-test.csv")
    return list(dict.fromkeys(text for a, b, _ in pairs for text in (a, b)))


def scifact_documents(scifact: Path, count: int) -> list[str]:
    return [record.text for _, record in zip(range(count), read_records(scifact / "corpus.jsonl"), strict=False)]


# The peers' venv.


def installed_versions(python: Path) -> dict[str, str] | None:
    """PEER_VERSIONS as installed for PYTHON; None where PYTHON or one of them is missing."""
    if not python.exists():
        return None
    done = subprocess.run([str(python), "-c", VERSIONS_SCRIPT], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else None


def pinned(versions: dict[str, str] | None) -> bool:
    """Whether VERSIONS are the pinned ones (a local build tag such as +cpu aside)."""
    pins = dict(requirement.split("==") for requirement in (PEER_TORCH, *PEER_PACKAGES))
    return versions is not None and all(versions[name].split("+")[0] == pins[name] for name in pins)


def peers_venv(venv: Path) -> tuple[Path, dict[str, str]]:
    """The Python of VENV, made and filled with the pinned peers where it lacks them, and its versions."""
    python = venv / "bin" / "python"
    versions = installed_versions(python)
    if not pinned(versions):
        print(f"# installing the peers into {venv}", file=sys.stderr, flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for requirements in ([PEER_TORCH], list(PEER_PACKAGES)):
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", *requirements], check=True, stdout=sys.stderr
            )
        versions = installed_versions(python)
        if not pinned(versions):
            raise SystemExit(f"{venv}: the peers did not install as pinned: {versions}")
    assert versions is not None
    return python, versions


# Whole processes.


def timed(label: str, command: list[str], env: dict[str, str], cwd: str | None = None) -> float:
    """Wall seconds of COMMAND from start to exit; its error output where it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{label} failed with status {done.returncode}:\n{done.stderr[-4000:]}")
    return seconds


@dataclass(frozen=True)
class Processes:
    """How each side's process is started: searcher with this interpreter, the peers with their venv's, both
    with ENV (offline, the same thread count)."""

    peers_python: Path
    model_dir: Path
    searcher_flags: list[str]  # settings of `searcher index`
    env: dict[str, str]

    def run(self, side: str, source: Path) -> float:
        """Seconds of one whole run of SIDE ("searcher" or a peer of PEER_SCRIPTS) on the texts of SOURCE."""
        with tempfile.TemporaryDirectory(prefix="searcher-speed-") as out:
            if side == "searcher":
                command = [sys.executable, "-m", "searcher", "index", str(source), "--index", "speed"]
                return timed(side, command + ["--home", out, *self.searcher_flags], self.env)
            command = [str(self.peers_python), "-c", PEER_SCRIPTS[side], str(self.model_dir), str(source), out]
            return timed(side, command, self.env, cwd=out)


@dataclass(frozen=True)
class Workload:
    key: str  # for `targets` and the --json
    name: str
    texts: list[str]
    peers: tuple[str, ...]


def measure(workload: Workload, processes: Processes, repeats: int) -> dict[str, list[float]]:
    """Seconds of each side's runs on WORKLOAD, REPEATS rounds of searcher then each peer."""
    samples: dict[str, list[float]] = {side: [] for side in ("searcher", *workload.peers)}
    with tempfile.TemporaryDirectory(prefix="searcher-speed-") as folder:
        source = Path(folder) / "texts.jsonl"
        lines = (json.dumps({"id": str(i), "text": text}) + "\n" for i, text in enumerate(workload.texts))
        source.write_text("".join(lines), encoding="utf-8")
        for _ in range(repeats):
            for side in samples:
                samples[side].append(processes.run(side, source))
    return samples


def print_runs(workloads: list[Workload], processes: Processes, repeats: int) -> dict[str, dict[str, Any]]:
    """Each workload's medians, printed as they come; all the samples, by workload key."""
    sides = ("searcher", *PEER_SCRIPTS)
    print(f"\n## Whole processes, median of {repeats} (seconds, texts/s)\n")
    print("| texts | count | " + " | ".join(f"`{side} index`" if side == "searcher" else side for side in sides) + " |")
    print("|---|---|" + "---|" * len(sides))
    runs = {}
    for workload in workloads:
        samples = measure(workload, processes, repeats)
        medians = {side: statistics.median(values) for side, values in samples.items()}
        count = len(workload.texts)
        cells = [f"{medians[side]:.1f} s, {count / medians[side]:.0f}/s" if side in medians else "–" for side in sides]
        print(f"| {workload.name} | {count:,} | " + " | ".join(cells) + " |", flush=True)
        runs[workload.key] = {"name": workload.name, "texts": count, "seconds": samples, "median": medians}
    return runs


# Targets.


def marginal(small: dict[str, Any], large: dict[str, Any], side: str) -> float | None:
    """Texts/s of SIDE between the two runs, start-up cancelled; None where the larger run was not slower."""
    seconds = large["median"][side] - small["median"][side]
    return (large["texts"] - small["texts"]) / seconds if seconds > 0 else None


def marginal_row(corpus: str, small: dict[str, Any], large: dict[str, Any], target: float) -> dict[str, Any]:
    ours, theirs = marginal(small, large, "searcher"), marginal(small, large, ST)
    ratio = ours / theirs if ours and theirs else None
    return {
        "target": f"marginal texts/s, {small['texts']:,} → {large['texts']:,} {corpus} ≥ {target:g}× {ST} `encode`",
        "measured": "–" if ratio is None else f"{ours:.0f}/s over {theirs:.0f}/s = {ratio:.2f}×",
        "ratio": ratio,
        "met": None if ratio is None else ratio >= target,
    }


def whole_row(run: dict[str, Any], peer: str, target: float) -> dict[str, Any]:
    ours, theirs = run["median"]["searcher"], run["median"][peer]
    return {
        "target": f"whole process, {run['texts']:,} SciFact documents: ≥ {target:g}× as fast as {peer}",
        "measured": f"{theirs:.1f} s / {ours:.1f} s = {theirs / ours:.2f}×",
        "ratio": theirs / ours,
        "met": theirs / ours >= target,
    }


def targets(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ours, theirs = runs["one"]["median"]["searcher"], runs["one"]["median"][ST]
    return [
        marginal_row("STS-B sentences", runs["sts_small"], runs["sts_large"], STS_MARGINAL),
        marginal_row("SciFact documents", runs["scifact_small"], runs["scifact_large"], SCIFACT_MARGINAL),
        whole_row(runs["scifact_large"], TXTAI, TXTAI_WHOLE),
        whole_row(runs["scifact_large"], ST_FAISS, ST_FAISS_WHOLE),
        {
            "target": f"fixed cost, one text: ≤ {FIXED_COST:g}× {ST}' one-text script",
            "measured": f"{ours:.1f} s / {theirs:.1f} s = {ours / theirs:.2f}×",
            "ratio": ours / theirs,
            "met": ours / theirs <= FIXED_COST,
        },
    ]


def print_targets(rows: list[dict[str, Any]]) -> None:
    print("\n## Targets\n\n| target | measured | met |")
    print("|---|---|---|")
    for row in rows:
        met = {True: "yes", False: "no", None: "not measured"}[row["met"]]
        print(f"| {row['target']} | {row['measured']} | {met} |")


# In this process.


def in_process(texts: list[str], settings: Settings, repeats: int) -> dict[str, Any]:
    """Median seconds of `Index.add` in all, timed around the call (its report's seconds start once storing does,
    after the overlapped reading, tokenizing and forward passes have begun), and in the model's forward passes;
    and the vectors it made."""
    seconds, model, passages = [], [], 0
    records = [Record(str(i), text) for i, text in enumerate(texts)]
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="searcher-speed-") as home:
            with Index.create("speed", settings, home=home) as index:
                started = time.perf_counter()
                report = index.add(records, settings.runtime.batch_size, settings.runtime.batch_tokens)
                seconds.append(time.perf_counter() - started)
        model.append(report.model_seconds)
        passages = report.passages
    return {
        "texts": len(texts),
        "passages": passages,
        "seconds": statistics.median(seconds),
        "model_seconds": statistics.median(model),
    }


def synthetic_shards(vectors: np.ndarray) -> Iterator[tuple[list[Record], EmbeddedDocuments]]:
    """One synthetic document per row of VECTORS, as `Index.add_embedded` shards of LATENCY_SHARD documents."""
    for start in range(0, len(vectors), LATENCY_SHARD):
        block = vectors[start : start + LATENCY_SHARD]
        records = [Record(f"doc-{i}", f"synthetic document {i}") for i in range(start, start + len(block))]
        yield records, EmbeddedDocuments(list(range(len(block))), block, 0)


def latency(documents: int, queries: list[str], settings: Settings, seed: int = 0) -> dict[str, Any]:
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
        "documents": documents,
        "queries": len(queries),
        "p50": float(np.percentile(timings, 50)),
        "p99": float(np.percentile(timings, 99)),
        "model_p50": float(np.percentile(model, 50)),
        "kind": kind,
    }


def cold_start_seconds(env: dict[str, str], repeats: int) -> float:
    """Median seconds of `searcher --help` in a new process: a command that needs no model imports none."""
    command = [sys.executable, "-m", "searcher", "--help"]
    return statistics.median(timed("searcher --help", command, env) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sts", type=Path, required=True, help="the stsbenchmark directory (sts-dev/test.csv)")
    parser.add_argument("--scifact", type=Path, required=True, help="the SciFact BEIR directory")
    parser.add_argument("--sts-from", type=int, default=2000, help="STS-B sentences of the smaller run")
    parser.add_argument("--sts-to", type=int, help="STS-B sentences of the larger run (default: all)")
    parser.add_argument("--scifact-from", type=int, default=300, help="SciFact documents of the smaller run")
    parser.add_argument("--scifact-docs", type=int, default=1000, help="SciFact documents of the larger run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timing; medians are reported")
    parser.add_argument("--precision", default="auto", help="searcher's precision (default: auto, as a user gets)")
    parser.add_argument("--chunk", help="searcher's long texts: auto (default: passages), none (cut them) or tokens")
    parser.add_argument(
        "--peers-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "searcher-speed-peers",
        help="venv of the peers, made here unless it holds them already",
    )
    parser.add_argument("--latency-docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--skip", nargs="*", default=[], choices=["processes", "in-process", "latency", "cold-start"])
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()

    settings = load_settings(precision=args.precision, chunk=args.chunk)
    resolved = Embedder(settings.embedding, settings.runtime.device).precision
    threads = torch.get_num_threads()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    header = machine.cpu_line(
        f"Python {platform.python_version()}, searcher precision {args.precision} ({resolved}), chunk "
        f"{args.chunk or settings.embedding.chunk}, batches of at most "
        f"{settings.runtime.batch_size} texts / {settings.runtime.batch_tokens} tokens; peers: batch size "
        f"{REFERENCE_BATCH_SIZE}, fp32; every process OMP_NUM_THREADS={threads}"
    )
    print(header, flush=True)
    load = os.getloadavg()[0]
    print(f"# load average {load:.1f} on {os.cpu_count()} CPUs before the run", flush=True)
    sentences = sts_sentences(args.sts)[: args.sts_to]
    documents = scifact_documents(args.scifact, args.scifact_docs)
    results: dict[str, Any] = {"machine": header, "load_average_before": load, "arguments": vars(args)}

    if "processes" not in args.skip:
        python, versions = peers_venv(args.peers_venv)
        results["peers"] = versions
        print("# peers (" + str(args.peers_venv) + "): " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        flags = ["--precision", args.precision] + (["--chunk", args.chunk] if args.chunk else [])
        # searcher's own model cache, empty: its first run traces the model, as a user's first run does.
        with tempfile.TemporaryDirectory(prefix="searcher-speed-cache-") as cache:
            processes = Processes(python, locate_model(BUNDLED_MODEL), flags, env | {"SEARCHER_CACHE_DIR": cache})
            first = measure(Workload("first", ONE_TEXT, [ONE_TEXT], ()), processes, 1)["searcher"][0]
            results["first_run_seconds"] = first
            print(f"# searcher's first run, one short text, empty model cache (it traces the model): {first:.1f} s")
            workloads = [
                Workload("sts_small", "STS-B sentences", sentences[: args.sts_from], (ST,)),
                Workload("sts_large", "STS-B sentences", sentences, (ST,)),
                Workload("scifact_small", "SciFact documents", documents[: args.scifact_from], (ST,)),
                Workload("scifact_large", "SciFact documents", documents, (ST, TXTAI, ST_FAISS)),
                Workload("one", "one short text", [ONE_TEXT], (ST,)),
            ]
            results["runs"] = print_runs(workloads, processes, args.repeats)
            results["targets"] = targets(results["runs"])
            print_targets(results["targets"])

    if "in-process" not in args.skip:
        print(f"\n## `Index.add` in this process, model loaded, median of {args.repeats}\n")
        print("| texts | count | vectors | seconds | texts/s | overhead outside the model |")
        print("|---|---|---|---|---|---|")
        results["in_process"] = {}
        for name, texts in (("STS-B sentences", sentences), ("SciFact documents", documents)):
            added = results["in_process"][name] = in_process(texts, settings, args.repeats)
            overhead = (added["seconds"] - added["model_seconds"]) / added["model_seconds"]
            print(
                f"| {name} | {added['texts']:,} | {added['passages']:,} | {added['seconds']:.1f} | "
                f"{added['texts'] / added['seconds']:.0f} | {overhead:.1%} |",
                flush=True,
            )

    if "latency" not in args.skip:
        result = results["latency"] = latency(args.latency_docs, sentences[: args.queries], settings)
        print(
            f"\nQuery latency, Python API, {result['documents']:,} documents ({result['kind']}), k=10, "
            f"{result['queries']} queries: p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms; embedding the "
            f"query alone: p50 {result['model_p50']:.1f} ms"
        )
    if "cold-start" not in args.skip:
        results["cold_start_seconds"] = cold_start_seconds(env, args.repeats)
        print(f"\nCold start of `searcher --help`, median of {args.repeats}: {results['cold_start_seconds']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
