"""Load on the HTTP API: mixed searches from concurrent clients while another client upserts documents.

    python benchmarks/http_load.py [--requests 1000] [--clients 8] [--documents DATA.jsonl]

Builds a temporary index of the bundled FAQ example (or --documents) with the bundled model, starts
`searcher serve` on a free loopback port, waits for /readyz, then sends a fixed number of search requests
(dense, keyword, hybrid, filtered and batches of 4, in rotation) from --clients threads while one more thread
upserts a changed document every --upsert-every seconds. Stops by itself when the searches are done; prints
errors and p50/p99 latency per request kind. Loopback only: nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "faq.jsonl"
QUESTIONS = [
    "I forgot my password",
    "how do I get an invoice",
    "can I use it offline",
    "delete my account",
    "the app is slow",
    "change my email address",
    "export my notes",
    "is there a dark mode",
]
KINDS = ("dense", "keyword", "hybrid", "filtered", "batch")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request_body(kind: str, number: int) -> tuple[str, dict]:
    question = QUESTIONS[number % len(QUESTIONS)]
    if kind == "batch":
        return "/v1/search/batch", {
            "index": "load",
            "queries": [QUESTIONS[(number + i) % len(QUESTIONS)] for i in range(4)],
            "k": 5,
        }
    if kind == "filtered":
        return "/v1/search", {"index": "load", "query": question, "k": 5, "filter": {"load_group": {"in": [0, 1]}}}
    return "/v1/search", {"index": "load", "query": question, "k": 5, "mode": kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--upsert-every", type=float, default=0.2, help="seconds between the upserting client's requests"
    )
    parser.add_argument("--documents", type=Path, default=EXAMPLE, help="JSONL records to serve (id, text, fields)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="searcher-load-") as home:
        lines = [json.loads(line) for line in args.documents.read_text(encoding="utf-8").splitlines() if line.strip()]
        for number, record in enumerate(lines):
            record["load_group"] = number % 3  # a field for the filtered searches to select on
        source = Path(home) / "documents.jsonl"
        source.write_text("\n".join(json.dumps(record) for record in lines) + "\n", encoding="utf-8")
        environment = os.environ | {"HF_HUB_OFFLINE": "1"}
        subprocess.run(
            [sys.executable, "-m", "searcher", "index", str(source), "--index", "load", "--home", home],
            check=True,
            env=environment,
            capture_output=True,
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "searcher", "serve", "--index", "load", "--home", home, "--port", str(port)],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            started = time.perf_counter()
            wait_ready(base, server)
            ready_seconds = time.perf_counter() - started
            report = run_load(base, args.requests, args.clients, args.upsert_every)
        finally:
            server.terminate()
            server.wait(30)

    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs; `searcher serve` on loopback, 1 worker, bundled model; "
        f"{len(lines)} documents; ready {ready_seconds:.1f} s after start"
    )
    print(
        f"# {args.requests} search requests from {args.clients} clients in {report['seconds']:.1f} s "
        f"({args.requests / report['seconds']:.0f} requests/s), while 1 client sent {report['upserts']} upserts"
    )
    print("\n| request | count | errors | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for kind in (*KINDS, "upsert"):
        timings = report["timings"][kind]
        errors = report["errors"][kind]
        if timings or errors:
            p50, p99 = (np.percentile(timings, 50), np.percentile(timings, 99)) if timings else (float("nan"),) * 2
            print(f"| {kind} | {len(timings) + errors} | {errors} | {p50:.1f} | {p99:.1f} |")
    total_errors = sum(report["errors"].values())
    print(f"\nerrors: {total_errors}")
    if report["examples"]:
        print("first errors:", *report["examples"][:5], sep="\n  ")
    sys.exit(1 if total_errors else 0)


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped: {server.stderr.read()}")
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server was not ready in time")


def run_load(base: str, requests: int, clients: int, upsert_every: float) -> dict:
    timings: dict[str, list[float]] = {kind: [] for kind in (*KINDS, "upsert")}
    errors = dict.fromkeys(timings, 0)
    examples: list[str] = []
    lock = threading.Lock()
    numbers = itertools.count()
    searching_done = threading.Event()

    def record(kind: str, seconds: float, response: httpx.Response | None, problem: str | None) -> None:
        with lock:
            if response is not None and response.status_code == 200:
                timings[kind].append(seconds * 1000)
            else:
                errors[kind] += 1
                examples.append(f"{kind}: {problem or f'{response.status_code} {response.text[:200]}'}")

    def timed(client: httpx.Client, kind: str, method: str, path: str, body: dict) -> None:
        started = time.perf_counter()
        try:
            response = client.request(method, f"{base}{path}", json=body)
            record(kind, time.perf_counter() - started, response, None)
        except httpx.HTTPError as error:
            record(kind, time.perf_counter() - started, None, repr(error))

    def searcher_client() -> None:
        with httpx.Client(timeout=60) as client:
            while (number := next(numbers)) < requests:
                kind = KINDS[number % len(KINDS)]
                timed(client, kind, "POST", *request_body(kind, number))

    def upserter() -> None:
        with httpx.Client(timeout=60) as client:
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
                timed(client, "upsert", "PUT", "/v1/indexes/load/documents", {"documents": documents})

    started = time.perf_counter()
    threads = [threading.Thread(target=searcher_client) for _ in range(clients)]
    writer = threading.Thread(target=upserter)
    writer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    searching_done.set()
    writer.join()
    return {
        "timings": timings,
        "errors": errors,
        "examples": examples,
        "seconds": seconds,
        "upserts": len(timings["upsert"]) + errors["upsert"],
    }


if __name__ == "__main__":
    main()
