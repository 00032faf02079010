"""Load on the HTTP API: the model's batched throughput, client sweeps of dense and mixed searches while a client
upserts, and the cost of one upsert against the index's size; then the targets, met or not.

    python benchmarks/http_load.py --clients 1,8,32 --requests 600 --big 100000 [--upserts 50] [--readers N]
        [--baseline EARLIER.json] [--json results.json]

A quick check of the script itself (under a minute): --requests 60 --clients 1,8 --big 5000. On 2 shared cores
the full run takes about 5 minutes, half of it building the 100,000-document index (IVF-PQ training).

1. Model: `Embedder()` (the bundled model, default settings) embeds --sentences short FAQ-like questions with
   `embed(texts, batch_size=64)` after a warm-up: sentences/s, the ceiling for dense searches (one query each).
2. Sweeps: a temporary index of the bundled FAQ example (or --documents) built by `searcher index`, served by
   one `searcher serve` on a free loopback port (with `--readers N` only when given and `searcher serve --help`
   lists it). For each client count: (a) dense only, --requests dense searches from that many clients:
   searches/s, p50, p99; (b) mixed, --requests searches (dense, keyword, hybrid, filtered, batches of 4, in
   rotation) while one more client upserts a changed document every --upsert-every seconds: p50/p99 per kind.
   Queries are distinct questions (no two requests of the sweep alike), so no cache of queries helps. Each
   searching client is one keep-alive connection sending its next request once answered, all of them on one
   asyncio loop with hand-written HTTP/1.1 (the upserting client is an httpx.Client on a thread). The clients
   run on the same machine, so the table also shows how many CPU cores the server and the clients kept busy.
3. Upserts: two indexes of synthetic documents, 1,000 and --big, built in this process through
   `Index.add_embedded` from random unit vectors (never through the model: 100,000 texts would take many
   minutes on 2 cores) into the default vector structure (auto: flat up to 50,000 vectors, IVF-PQ above), served
   together by one `searcher serve`; --upserts single-document PUTs per index (a new document, then a changed
   one, in turn), interleaved between the two indexes so that both see the same machine: p50/p99 per size.

Ratios rather than absolute times, since machines differ. `--baseline` takes an earlier --json of this script
(same machine) for the one comparison across runs: dense p50 with 1 client. Exit status 1 when a request failed,
0 otherwise, targets met or not. Loopback only: nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import machine  # benchmarks/machine.py: this script's own folder is first on the path
import numpy as np

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "faq.jsonl"
KINDS = ("dense", "keyword", "hybrid", "filtered", "batch")
MODEL_BATCH_SIZE = 64
SMALL_INDEX = 1000  # documents of the small index of the upsert part
SHARD = 10_000  # synthetic documents per `add_embedded` shard
WARM_UP_REQUESTS = 10  # untimed requests of each kind before the sweeps (and upserts per index before timing)
BASELINE_TOLERANCE = 0.10  # dense p50 with 1 client may be this much above the baseline's and count as no worse

# Targets of the issue.
DENSE_SHARE = 0.50  # dense searches/s at 32 clients over the model's batched sentences/s
KEYWORD_P50_MS = 15.0  # keyword p50 in the mixed run at 32 clients
DENSE_P99_MS = 250.0  # dense p99 at 32 clients
UPSERT_RATIO = 1.5  # upsert p50 on the big index over the small one's
TARGET_CLIENTS = 32

TEMPLATES = (
    "how do I {action} my {thing}{where}",
    "can I {action} my {thing}{where}",
    "I can't {action} my {thing}{where}",
    "is it possible to {action} my {thing}{where}",
    "what happens if I {action} my {thing}{where}",
    "why does it fail when I {action} my {thing}{where}",
)
ACTIONS = tuple(
    "export,delete,share,sync,restore,back up,rename,move,print,encrypt,recover,lock,archive,download,edit".split(",")
)
THINGS = tuple(
    (
        "notes,account,password,email address,notebook,attachments,invoices,subscription,tags,folders,calendar,"
        "profile picture,shared links,drafts,reminders,templates,history,settings,contacts,workspace"
    ).split(",")
)
WHERE = (
    "",
    " on Android",
    " on my iPhone",
    " offline",
    " from the web app",
    " after an update",
    " on a shared device",
    " without internet",
)


def questions(seed: int = 0) -> list[str]:
    """Every short FAQ-like question the templates make (14,400), in a seeded random order."""
    made = [
        template.format(action=action, thing=thing, where=where)
        for template, action, thing, where in itertools.product(TEMPLATES, ACTIONS, THINGS, WHERE)
    ]
    random.Random(seed).shuffle(made)
    return made


def cpu_line() -> str:
    return machine.cpu_line(f"Python {platform.python_version()}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentiles(timings: Sequence[float]) -> dict[str, float | None]:
    if not timings:
        return {"p50": None, "p99": None}
    return {"p50": float(np.percentile(timings, 50)), "p99": float(np.percentile(timings, 99))}


def ms(value: float | None, unit: str = "") -> str:
    return "–" if value is None else f"{value:.1f}{unit}"


# 1. The model's own batched throughput.


def model_throughput(texts: list[str]) -> tuple[dict[str, Any], Any]:
    """Sentences/s of the bundled model on TEXTS in batches of MODEL_BATCH_SIZE, warm; and the embedder."""
    from searcher.embedder import Embedder

    embedder = Embedder()
    embedder.embed(texts[: 2 * MODEL_BATCH_SIZE], batch_size=MODEL_BATCH_SIZE)  # warm-up
    started = time.perf_counter()
    embedder.embed(texts, batch_size=MODEL_BATCH_SIZE)
    seconds = time.perf_counter() - started
    words = sum(len(text.split()) for text in texts) / len(texts)
    return {
        "sentences": len(texts),
        "batch_size": MODEL_BATCH_SIZE,
        "seconds": seconds,
        "sentences_per_s": len(texts) / seconds,
        "words_per_sentence": words,
        "precision": str(embedder.precision),
        "device": str(embedder.device),
    }, embedder


# Serving.


class Server:
    """`searcher serve` of INDEXES in HOME on a free loopback port, with any more OPTIONS, until closed."""

    def __init__(self, home: str, indexes: Sequence[str], readers: int | None, options: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "searcher", "serve", "--home", home, "--port", str(self.port), *options]
        for name in indexes:
            command += ["--index", name]
        if readers is not None:
            command += ["--readers", str(readers)]
        self.log = Path(home) / f"serve-{self.port}.log"
        with self.log.open("w") as log:  # a file, not a pipe that nobody reads and that could fill up
            self.process = subprocess.Popen(
                command, env=os.environ | {"HF_HUB_OFFLINE": "1"}, stdout=log, stderr=subprocess.STDOUT
            )
        started = time.perf_counter()
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        self.ready_seconds = time.perf_counter() - started

    def _wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server stopped: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server was not ready in time")

    def cpu_seconds(self) -> float | None:
        """User and system CPU time of the server process so far, all threads (Linux only)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self) -> str | None:
        """The text of /metrics where the server has that endpoint."""
        try:
            response = httpx.get(f"{self.base}/metrics", timeout=10)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def serve_readers(requested: int | None) -> tuple[int | None, str]:
    """The --readers to pass to `searcher serve` (None: none) and a phrase saying what was used."""
    if requested is None:
        return None, "server's default readers"
    help_text = subprocess.run(
        [sys.executable, "-m", "searcher", "serve", "--help"],
        capture_output=True,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "COLUMNS": "200", "NO_COLOR": "1"},
    ).stdout
    if "--readers" in help_text:
        return requested, f"--readers {requested}"
    return None, f"--readers {requested} asked for, but this `searcher serve` has no --readers: its default"


# 2. Client sweeps.


class Queries:
    """Distinct questions for the whole sweep, handed out in turn to any thread (wrapping round past the end)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self._numbers = itertools.count()  # next() on a count is atomic in CPython
        self.used = 0

    def take(self, count: int = 1) -> list[str]:
        taken = []
        for _ in range(count):
            number = next(self._numbers)
            self.used = max(self.used, number + 1)
            taken.append(self.texts[number % len(self.texts)])
        return taken


def request_body(kind: str, index: str, queries: Queries) -> tuple[str, dict]:
    if kind == "batch":
        return "/v1/search/batch", {"index": index, "queries": queries.take(4), "k": 5}
    query = queries.take()[0]
    if kind == "filtered":
        return "/v1/search", {"index": index, "query": query, "k": 5, "filter": {"load_group": {"in": [0, 1]}}}
    return "/v1/search", {"index": index, "query": query, "k": 5, "mode": kind}


class Connection:
    """One keep-alive HTTP/1.1 connection to the server, written by hand on asyncio's streams: a search
    costs this process a tenth of what an httpx request costs (about 0.1 ms of CPU rather than 1.7 ms at 32
    clients), and the server shares the machine's cores with its clients."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        """The status and body of POST PATH with BODY as JSON; a closed connection is opened again."""
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.server.port)
        reader, writer = self.streams
        payload = json.dumps(body).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.close()
            raise ConnectionError("the server closed the connection") from None
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        content = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self.close()
        return int(lines[0].split()[1]), content

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def run_load(
    server: Server,
    index: str,
    requests: int,
    clients: int,
    kinds: Sequence[str],
    queries: Queries,
    upsert_every: float | None,
) -> dict[str, Any]:
    """REQUESTS searches of KINDS in rotation from CLIENTS connections (each sends its next request once
    answered), and upserts every UPSERT_EVERY seconds from one more client while they run (None: none).
    Timings in milliseconds per kind, errors, CPU use."""
    names = (*kinds, "upsert") if upsert_every is not None else tuple(kinds)
    timings: dict[str, list[float]] = {kind: [] for kind in names}
    errors = dict.fromkeys(timings, 0)
    examples: list[str] = []
    lock = threading.Lock()
    numbers = itertools.count()
    searching_done = threading.Event()

    def record(kind: str, seconds: float, status: int | None, problem: str) -> None:
        with lock:
            if status == 200:
                timings[kind].append(seconds * 1000)
            else:
                errors[kind] += 1
                examples.append(f"{kind}: {status or ''} {problem[:200]}")

    async def searcher_client() -> None:
        connection = Connection(server)
        try:
            while (number := next(numbers)) < requests:
                kind = kinds[number % len(kinds)]
                started = time.perf_counter()
                try:
                    status, content = await connection.post(*request_body(kind, index, queries))
                    record(kind, time.perf_counter() - started, status, content.decode(errors="replace"))
                except (OSError, ValueError) as error:
                    record(kind, time.perf_counter() - started, None, repr(error))
        finally:
            connection.close()

    async def searchers() -> None:
        await asyncio.gather(*(searcher_client() for _ in range(clients)))

    def upserter() -> None:
        with httpx.Client(timeout=120) as client:
            for version in itertools.count():
                if searching_done.wait(upsert_every):
                    return
                documents = [
                    {
                        "id": f"load-{version % 20}",
                        "text": f"Release note {version}: syncing is faster on slow networks",
                        "fields": {"load_group": version % 3},
                    }
                ]
                started = time.perf_counter()
                try:
                    response = client.put(f"{server.base}/v1/indexes/{index}/documents", json={"documents": documents})
                    record("upsert", time.perf_counter() - started, response.status_code, response.text)
                except httpx.HTTPError as error:
                    record("upsert", time.perf_counter() - started, None, repr(error))

    writer = threading.Thread(target=upserter) if upsert_every is not None else None
    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
    started = time.perf_counter()
    if writer is not None:
        writer.start()
    asyncio.run(searchers())
    seconds = time.perf_counter() - started
    searching_done.set()
    if writer is not None:
        writer.join()
    server_after = server.cpu_seconds()
    server_busy = None if server_cpu is None or server_after is None else (server_after - server_cpu) / seconds
    return {
        "clients": clients,
        "requests": requests,
        "seconds": seconds,
        "requests_per_s": requests / seconds,
        "server_cores_busy": server_busy,
        "client_cores_busy": (time.process_time() - client_cpu) / seconds,
        "kinds": {
            kind: {
                "count": len(timings[kind]) + errors[kind],
                "errors": errors[kind],
                "per_s": len(timings[kind]) / seconds,
                **percentiles(timings[kind]),
            }
            for kind in names
        },
        "errors": sum(errors.values()),
        "examples": examples[:5],
    }


def sweep(args: argparse.Namespace, readers: int | None, texts: list[str]) -> dict[str, Any]:
    """The dense-only and mixed runs for every client count, against one server of the FAQ index."""
    with tempfile.TemporaryDirectory(prefix="searcher-load-") as home:
        lines = [json.loads(line) for line in args.documents.read_text(encoding="utf-8").splitlines() if line.strip()]
        for number, record in enumerate(lines):
            record["load_group"] = number % 3  # a field for the filtered searches to select on
        source = Path(home) / "documents.jsonl"
        source.write_text("\n".join(json.dumps(record) for record in lines) + "\n", encoding="utf-8")
        subprocess.run(
            [sys.executable, "-m", "searcher", "index", str(source), "--index", "load", "--home", home],
            check=True,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
            capture_output=True,
        )
        server = Server(home, ["load"], readers)
        try:
            queries = Queries(texts)
            warm_up = run_load(server, "load", WARM_UP_REQUESTS * len(KINDS), 1, KINDS, queries, None)
            runs = []
            for clients in args.clients:
                for run, kinds, upsert_every in (("dense", ("dense",), None), ("mixed", KINDS, args.upsert_every)):
                    result = run_load(server, "load", args.requests, clients, kinds, queries, upsert_every)
                    runs.append({"run": run, **result})
                    print(
                        f"  {clients} clients, {run}: {result['requests_per_s']:.0f} requests/s, "
                        f"{result['errors']} errors",
                        file=sys.stderr,
                        flush=True,
                    )
            metrics = server.metrics()
        finally:
            server.close()
    return {
        "documents": len(lines),
        "ready_seconds": server.ready_seconds,
        "warm_up_errors": warm_up["errors"],
        "distinct_queries_used": min(queries.used, len(texts)),
        "queries_used": queries.used,
        "runs": runs,
        "metrics_endpoint": metrics is not None,
        "metrics": metrics[:50_000] if metrics else None,
    }


def print_sweep(result: dict[str, Any], args: argparse.Namespace, readers_phrase: str) -> None:
    print(
        f"\n## 2. Client sweeps: {result['documents']} documents ({args.documents.name}), one `searcher serve` on "
        f"loopback, 1 worker, {readers_phrase}; ready {result['ready_seconds']:.1f} s after start; {args.requests} "
        f"requests per run; mixed runs: 1 more client upserting every {args.upsert_every:g} s; "
        f"{result['queries_used']:,} queries sent, {result['distinct_queries_used']:,} distinct"
    )
    print("\n| clients | run | request | count | errors | p50 ms | p99 ms | per s |")
    print("|---|---|---|---|---|---|---|---|")
    for run in result["runs"]:
        for kind, numbers in run["kinds"].items():
            print(
                f"| {run['clients']} | {run['run']} | {kind} | {numbers['count']} | {numbers['errors']} | "
                f"{ms(numbers['p50'])} | {ms(numbers['p99'])} | {numbers['per_s']:.1f} |"
            )
    print("\n| clients | run | seconds | requests/s | server CPU cores busy | client CPU cores busy |")
    print("|---|---|---|---|---|---|")
    for run in result["runs"]:
        busy = run["server_cores_busy"]
        print(
            f"| {run['clients']} | {run['run']} | {run['seconds']:.1f} | {run['requests_per_s']:.1f} | "
            f"{'–' if busy is None else f'{busy:.2f}'} | {run['client_cores_busy']:.2f} |"
        )
    print(f"\n/metrics: {'served (its text is in --json)' if result['metrics_endpoint'] else 'not served'}")


# 3. Upsert cost against the index's size.


def synthetic_shards(count: int, dimension: int, seed: int) -> Iterator[tuple[list, Any]]:
    """COUNT synthetic documents with random unit vectors, as `Index.add_embedded` shards."""
    from searcher import Record
    from searcher.embedder import EmbeddedDocuments

    rng = np.random.default_rng(seed)
    for start in range(0, count, SHARD):
        size = min(SHARD, count - start)
        vectors = rng.standard_normal((size, dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [
            Record(f"doc-{i}", f"synthetic document {i} about {THINGS[i % len(THINGS)]}", {"group": i % 3})
            for i in range(start, start + size)
        ]
        yield records, EmbeddedDocuments(positions=list(range(size)), vectors=vectors, truncated=0)


def build_synthetic(home: str, name: str, count: int, embedder: Any, index_type: str) -> dict[str, Any]:
    from searcher import Index, Settings

    started = time.perf_counter()
    with Index.create(name, Settings(index_type=index_type), home=home, embedder=embedder) as index:
        index.add_embedded(synthetic_shards(count, embedder.dimension, seed=count))
        kind = index.vectors.kind
        stored = len(index)
    return {"documents": stored, "structure": kind, "build_seconds": time.perf_counter() - started}


def upsert_cost(args: argparse.Namespace, readers: int | None, embedder: Any) -> dict[str, Any]:
    sizes = {"small": SMALL_INDEX, "big": args.big}
    with tempfile.TemporaryDirectory(prefix="searcher-upsert-") as home:
        built = {}
        for name, count in sizes.items():
            built[name] = build_synthetic(home, name, count, embedder, args.index_type)
            print(
                f"  built {count:,} documents ({built[name]['structure']}) in {built[name]['build_seconds']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        server = Server(home, list(sizes), readers)
        timings: dict[str, list[float]] = {name: [] for name in sizes}
        errors = dict.fromkeys(sizes, 0)
        examples: list[str] = []
        rng = random.Random(0)
        started = time.perf_counter()
        try:
            with httpx.Client(timeout=120) as client:
                for number in range(-WARM_UP_REQUESTS, args.upserts):
                    for name, count in sizes.items():
                        if number % 2 == 0:  # a new document
                            document = {"id": f"new-{number}", "text": f"Release note {number}: faster sync"}
                        else:  # a changed one
                            document = {"id": f"doc-{rng.randrange(count)}", "text": f"synthetic document {number}"}
                        document["fields"] = {"group": number % 3}
                        begun = time.perf_counter()
                        try:
                            response = client.put(
                                f"{server.base}/v1/indexes/{name}/documents", json={"documents": [document]}
                            )
                            problem = None if response.status_code == 200 else f"{response.status_code} {response.text}"
                        except httpx.HTTPError as error:
                            problem = repr(error)
                        seconds = (time.perf_counter() - begun) * 1000
                        if number < 0:
                            continue  # warm-up
                        if problem is None:
                            timings[name].append(seconds)
                        else:
                            errors[name] += 1
                            examples.append(f"upsert {name}: {problem[:200]}")
        finally:
            server.close()
        seconds = time.perf_counter() - started
    indexes = {
        name: built[name] | {"upserts": args.upserts, "errors": errors[name], **percentiles(timings[name])}
        for name in sizes
    }
    small, big = indexes["small"]["p50"], indexes["big"]["p50"]
    return {
        "indexes": indexes,
        "ready_seconds": server.ready_seconds,
        "upsert_seconds": seconds,
        "ratio_p50": big / small if small and big else None,
        "errors": sum(errors.values()),
        "examples": examples[:5],
        "how_built": (
            "synthetic texts ('synthetic document N about THING'), random unit vectors (normal, L2-normalized, "
            "384 dimensions) stored through Index.add_embedded, never embedded by the model; "
            f"vector structure {args.index_type}"
        ),
    }


def print_upserts(result: dict[str, Any]) -> None:
    indexes = result["indexes"]
    print(
        f"\n## 3. Upsert cost against index size: {result['how_built']}; both indexes served by one `searcher serve` "
        f"(ready {result['ready_seconds']:.1f} s after start); single-document PUTs, a new document and a changed "
        f"one in turn, interleaved between the indexes, after {WARM_UP_REQUESTS} untimed each"
    )
    print("\n| documents | structure | build s | upserts | errors | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for numbers in indexes.values():
        print(
            f"| {numbers['documents']:,} | {numbers['structure']} | {numbers['build_seconds']:.1f} | "
            f"{numbers['upserts']} | {numbers['errors']} | {ms(numbers['p50'])} | {ms(numbers['p99'])} |"
        )
    ratio = result["ratio_p50"]
    print(
        f"\np50({indexes['big']['documents']:,}) / p50({indexes['small']['documents']:,}): "
        f"{'–' if ratio is None else f'{ratio:.2f}'}"
    )


# Targets.


def find_run(sweep_result: dict[str, Any] | None, clients: int, run: str) -> dict[str, Any] | None:
    if sweep_result is None:
        return None
    return next((r for r in sweep_result["runs"] if r["clients"] == clients and r["run"] == run), None)


def targets(
    model: dict[str, Any] | None,
    sweep_result: dict[str, Any] | None,
    upserts: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
    clients: list[int],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The issue's targets as rows (target, measured, met: True, False or None where not measured) and the
    numbers they rest on."""
    most = max(clients)
    at = f"{most} clients" + ("" if most == TARGET_CLIENTS else f" (the target is at {TARGET_CLIENTS})")
    dense_most, mixed_most = find_run(sweep_result, most, "dense"), find_run(sweep_result, most, "mixed")
    dense_one = find_run(sweep_result, 1, "dense")
    summary: dict[str, Any] = {
        "model_sentences_per_s": model["sentences_per_s"] if model else None,
        "most_clients": most,
        "dense_per_s_most_clients": dense_most["kinds"]["dense"]["per_s"] if dense_most else None,
        "keyword_p50_mixed_most_clients_ms": mixed_most["kinds"]["keyword"]["p50"] if mixed_most else None,
        "dense_p99_most_clients_ms": dense_most["kinds"]["dense"]["p99"] if dense_most else None,
        "dense_p99_mixed_most_clients_ms": mixed_most["kinds"]["dense"]["p99"] if mixed_most else None,
        "dense_p50_1_client_ms": dense_one["kinds"]["dense"]["p50"] if dense_one else None,
        "upsert_p50_ratio": upserts["ratio_p50"] if upserts else None,
        "errors": (upserts["errors"] if upserts else 0),
    }
    if sweep_result:
        summary["errors"] += sweep_result["warm_up_errors"] + sum(run["errors"] for run in sweep_result["runs"])
    rows = []

    def row(target: str, measured: str, met: bool | None) -> None:
        rows.append({"target": target, "measured": measured, "met": met})

    share = None
    if summary["model_sentences_per_s"] and summary["dense_per_s_most_clients"] is not None:
        share = summary["dense_per_s_most_clients"] / summary["model_sentences_per_s"]
    summary["dense_share_of_model"] = share
    row(
        f"dense searches/s at {at} ≥ {DENSE_SHARE:.0%} of the model's batched sentences/s",
        "–"
        if share is None
        else f"{summary['dense_per_s_most_clients']:.1f}/s = {share:.1%} of {summary['model_sentences_per_s']:.0f}/s",
        None if share is None else share >= DENSE_SHARE,
    )
    keyword = summary["keyword_p50_mixed_most_clients_ms"]
    row(
        f"keyword p50, mixed run at {at} ≤ {KEYWORD_P50_MS:g} ms",
        ms(keyword, " ms"),
        None if keyword is None else keyword <= KEYWORD_P50_MS,
    )
    dense_p99 = summary["dense_p99_most_clients_ms"]
    row(
        f"dense p99 at {at} ≤ {DENSE_P99_MS:g} ms",
        f"{ms(dense_p99, ' ms')} dense-only run (mixed run: {ms(summary['dense_p99_mixed_most_clients_ms'], ' ms')})",
        None if dense_p99 is None else dense_p99 <= DENSE_P99_MS,
    )
    row("errors = 0", str(summary["errors"]), summary["errors"] == 0)
    p50 = summary["dense_p50_1_client_ms"]
    before = (baseline or {}).get("dense_p50_1_client_ms")
    if p50 is None:
        measured, met = "– (no 1-client run)", None
    elif before is None:
        measured, met = f"{p50:.1f} ms (no --baseline to compare with)", None
    else:
        measured, met = (
            f"{p50:.1f} ms, before {before:.1f} ms ({p50 / before - 1:+.1%})",
            p50 <= before * (1 + BASELINE_TOLERANCE),
        )
    row(f"dense p50 with 1 client no worse than before (within {BASELINE_TOLERANCE:.0%})", measured, met)
    ratio = summary["upsert_p50_ratio"]
    big = f"{upserts['indexes']['big']['documents']:,}" if upserts else "--big"
    row(
        f"upsert p50 at {big} documents / at {SMALL_INDEX:,} ≤ {UPSERT_RATIO:g}",
        "–"
        if ratio is None
        else f"{ratio:.2f} ({ms(upserts['indexes']['big']['p50'])} ms / {ms(upserts['indexes']['small']['p50'])} ms)",
        None if ratio is None else ratio <= UPSERT_RATIO,
    )
    return rows, summary


def print_targets(rows: list[dict[str, Any]]) -> None:
    print("\n## Targets\n\n| target | measured | met |")
    print("|---|---|---|")
    for entry in rows:
        met = {True: "yes", False: "no", None: "not measured"}[entry["met"]]
        print(f"| {entry['target']} | {entry['measured']} | {met} |")


def client_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("client counts are positive integers, comma-separated: 1,8,32")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=client_counts, default=[1, 8, 32], help="client counts, e.g. 1,8,32")
    parser.add_argument("--requests", type=int, default=600, help="search requests per run")
    parser.add_argument(
        "--upsert-every", type=float, default=0.2, help="seconds between the upserting client's requests"
    )
    parser.add_argument("--documents", type=Path, default=EXAMPLE, help="JSONL records to serve (id, text, fields)")
    parser.add_argument("--sentences", type=int, default=2048, help="questions the model embeds for its throughput")
    parser.add_argument("--big", type=int, default=100_000, help="documents of the big synthetic index")
    parser.add_argument("--upserts", type=int, default=50, help="timed single-document upserts per index")
    parser.add_argument("--index-type", default="auto", help="vector structure of the synthetic indexes")
    parser.add_argument("--readers", type=int, help="`searcher serve --readers N`, where the server has it")
    parser.add_argument("--baseline", type=Path, help="an earlier --json of this script, same machine")
    parser.add_argument("--skip", nargs="*", default=[], choices=["model", "sweep", "upserts"])
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    baseline = json.loads(args.baseline.read_text())["summary"] if args.baseline else None

    print(cpu_line(), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None:
        busy = load > (os.cpu_count() or 1) / 2
        print(
            f"# load average {load:.1f} on {os.cpu_count()} CPUs before the run"
            + (": other work shares the machine, so the timings below are unreliable" if busy else ""),
            flush=True,
        )
    texts = questions()
    timings: dict[str, float] = {}
    model, embedder = None, None
    if "model" not in args.skip:
        started = time.perf_counter()
        model, embedder = model_throughput(texts[: args.sentences])
        timings["model"] = time.perf_counter() - started
        print(
            f"\n## 1. Model: {model['sentences']:,} short questions ({model['words_per_sentence']:.1f} words each on "
            f"average), `Embedder().embed(texts, batch_size={MODEL_BATCH_SIZE})`, warm, precision "
            f"{model['precision']}, {model['device']}: {model['sentences_per_s']:.0f} sentences/s "
            f"({model['seconds']:.1f} s)",
            flush=True,
        )
    readers, readers_phrase = serve_readers(args.readers)
    sweep_result = None
    if "sweep" not in args.skip:
        started = time.perf_counter()
        sweep_result = sweep(args, readers, texts[args.sentences :] + texts[: args.sentences])
        timings["sweep"] = time.perf_counter() - started
        print_sweep(sweep_result, args, readers_phrase)
    upserts = None
    if "upserts" not in args.skip:
        started = time.perf_counter()
        if embedder is None:
            from searcher.embedder import Embedder

            embedder = Embedder()
        upserts = upsert_cost(args, readers, embedder)
        timings["upserts"] = time.perf_counter() - started
        print_upserts(upserts)
    del embedder
    gc.collect()
    rows, summary = targets(model, sweep_result, upserts, baseline, args.clients)
    print_targets(rows)
    print("\nseconds per part: " + ", ".join(f"{part} {seconds:.0f}" for part, seconds in timings.items()))
    examples = (sweep_result and [e for run in sweep_result["runs"] for e in run["examples"]] or []) + (
        upserts["examples"] if upserts else []
    )
    if examples:
        print("first errors:", *examples[:5], sep="\n  ")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu_line(),
                    "arguments": {key: str(value) for key, value in vars(args).items()},
                    "readers": readers_phrase,
                    "model": model,
                    "sweep": sweep_result,
                    "upserts": upserts,
                    "targets": rows,
                    "summary": summary,
                    "seconds_per_part": timings,
                    "load_average_before": load,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    sys.exit(1 if summary["errors"] else 0)


if __name__ == "__main__":
    main()
