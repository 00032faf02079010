"""Killed writers and concurrent readers: an index stays consistent and loses no committed document."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from searcher import Index

pytestmark = pytest.mark.slow  # subprocess kill loops: minutes on two cores

DOCUMENTS = 2000
KILLS = 20
WRITTEN_WHILE_READING = 800


def write_corpus(path, version):
    rng = random.Random(5)
    words = "support billing account password export sync note share mobile team invoice".split()
    with path.open("w") as handle:
        for i in range(DOCUMENTS):
            text = f"document {i} version {version}: " + " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))
            handle.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("crash") / "corpus.jsonl", 0)


def expected_texts(corpus):
    return {row["id"]: row["text"] for row in map(json.loads, corpus.read_text().splitlines())}


def index_command(corpus, home, model):
    return [
        sys.executable,
        "-m",
        "searcher",
        "index",
        str(corpus),
        "--index",
        "crash",
        "--model",
        str(model),
        "--home",
        str(home),
        "--batch-size",
        "16",
    ]


def timed_run(corpus, home, model):
    """Seconds until the index file appears (start-up) and until the run ends."""
    started = time.monotonic()
    process = subprocess.Popen(index_command(corpus, home, model), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (home / "crash" / "docs.sqlite").exists() and process.poll() is None:
        time.sleep(0.05)
    created = time.monotonic() - started
    assert process.wait(timeout=300) == 0
    return created, time.monotonic() - started


def assert_consistent(home, versions, rng, sample=15):
    """check() passes, and every stored document is one whole version of itself and is found by its text."""
    with Index.open("crash", home) as index:
        # A kill between a commit and saving the vector file leaves it behind SQLite: reported, rebuilt in memory.
        assert all(problem.startswith("vectors.faiss") for problem in index.check())
        stored = {document.id: document.text for document in index.documents()}
        assert all(any(text == version[doc] for version in versions) for doc, text in stored.items())
        for document_id in rng.sample(sorted(stored), min(sample, len(stored))):
            hit = index.search(stored[document_id], k=1)[0]
            assert (hit.id, hit.text) == (document_id, stored[document_id])
        return len(stored)


def test_killed_indexing_recovers_and_completes(corpus, tiny_model, tmp_path):
    # Two versions of every document: each run replaces what the previous one wrote, so every kill lands
    # in the middle of real work (new documents first, replacements after).
    sources = [corpus, write_corpus(tmp_path / "corpus-v1.jsonl", 1)]
    versions = [expected_texts(source) for source in sources]
    rng = random.Random(2024)
    home = tmp_path / "home"
    start_up, full_run = timed_run(corpus, tmp_path / "timing", tiny_model)
    kills = recoveries = checked = 0
    deadline = time.monotonic() + 480
    while kills < KILLS and time.monotonic() < deadline:
        process = subprocess.Popen(
            index_command(sources[kills % 2], home, tiny_model), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(start_up, full_run))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        if (home / "crash" / "docs.sqlite").exists():
            checked += assert_consistent(home, versions, rng)
            recoveries += 1
    assert kills == KILLS, f"only {kills} kills within the time bound"
    assert recoveries >= KILLS - 2 and checked > 0, (recoveries, checked)
    subprocess.run(index_command(corpus, home, tiny_model), check=True, capture_output=True, timeout=300)
    with Index.open("crash", home) as index:
        assert index.check() == []
        assert {document.id: document.text for document in index.documents()} == versions[0]
        assert len(index.vectors) == DOCUMENTS
    print(f"\n{kills} kills, {recoveries} recoveries checked, {checked} committed documents seen after kills")


READER = """
import json, random, sys, time
from pathlib import Path
from searcher import Index

home, corpus, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
texts = {row["id"]: row["text"] for row in map(json.loads, corpus.read_text().splitlines())}
rng, queries, errors, sizes = random.Random(sys.argv[4]), 0, [], []
with Index.open("crash", home) as index:
    index.search("warm up", k=1)
    stop.with_name(f"ready-{sys.argv[4]}").touch()
    while not stop.exists():
        try:
            hits = index.search(texts[f"doc-{rng.randrange(len(texts))}"], k=5)
            if any(hit.text != texts[hit.id] for hit in hits):
                errors.append("a hit whose text is not its document's")
            sizes.append(len(index))
        except Exception as error:  # any error at all is a failure of the guarantee
            errors.append(repr(error))
        queries += 1
print(json.dumps({"queries": queries, "errors": errors[:5], "shrank": any(b < a for a, b in zip(sizes, sizes[1:]))}))
"""


def test_reader_processes_keep_answering_while_a_writer_works(corpus, tiny_model, tmp_path):
    home, stop = tmp_path / "home", tmp_path / "stop"
    lines = corpus.read_text().splitlines()
    first, more = corpus.parent / "first.jsonl", corpus.parent / "more.jsonl"
    first.write_text("".join(line + "\n" for line in lines[:200]))
    more.write_text("".join(line + "\n" for line in lines[:WRITTEN_WHILE_READING]))
    subprocess.run(index_command(first, home, tiny_model), check=True, capture_output=True, timeout=300)
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(home), str(corpus), str(stop), str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{seed}").exists() for seed in range(2)) and time.monotonic() < deadline:
        time.sleep(0.1)
    writer = subprocess.run(index_command(more, home, tiny_model), capture_output=True, text=True, timeout=300)
    stop.touch()
    outputs = [reader.communicate(timeout=120) for reader in readers]
    assert writer.returncode == 0, writer.stderr
    assert all(reader.returncode == 0 for reader in readers), outputs
    results = [json.loads(out) for out, _ in outputs]
    assert all(result == {"queries": result["queries"], "errors": [], "shrank": False} for result in results), results
    assert all(result["queries"] > 10 for result in results), results
    with Index.open("crash", home) as index:
        assert len(index) == WRITTEN_WHILE_READING and index.check() == []
