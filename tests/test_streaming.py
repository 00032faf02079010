"""Embedding and indexing read their input chunk by chunk: memory does not grow with the corpus."""

import json
import subprocess
import sys

import numpy as np
import pytest

import searcher.embedder
from searcher import Index, Record


def test_documents_are_embedded_group_by_group_with_positions_counted_from_the_start(tiny_embedder, monkeypatch):
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(23)]
    whole = tiny_embedder.embed(texts)
    monkeypatch.setattr(searcher.embedder, "STREAM_DOCUMENTS", 5)
    consumed = []

    def source():
        for i, text in enumerate(texts):
            consumed.append(i)
            yield text, "", ()

    batches = tiny_embedder.embed_documents(source(), batch_size=2)
    first = next(batches)
    assert len(consumed) == 5  # only the first group was read to embed the first batch
    streamed = np.zeros_like(whole)
    for batch in [first, *batches]:
        streamed[batch.positions] = batch.vectors
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_add_takes_a_generator_and_counts_repeats_across_chunks(tiny_index, monkeypatch):
    monkeypatch.setattr("searcher.index.WRITE_CHUNK", 3)
    index = tiny_index([], "chunks")
    records = (Record(str(i % 8), f"text {i}") for i in range(10))  # ids 0 and 1 come again in a later chunk
    report = index.add(records)
    assert (report.added, report.duplicates, len(index)) == (8, 2, 8)
    assert {document.id: document.text for document in index.documents()}["1"] == "text 9"


PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_of_indexing(tmp_path, tiny_model, documents):
    corpus = tmp_path / f"corpus-{documents}.jsonl"
    with corpus.open("w") as handle:
        for i in range(documents):
            handle.write(
                json.dumps({"id": str(i), "text": f"short generated document {i} about topic {i % 997}"}) + "\n"
            )
    command = [
        sys.executable,
        "-m",
        "searcher",
        "index",
        str(corpus),
        "--index",
        str(tmp_path / f"index-{documents}"),
        "--model",
        str(tiny_model),
        "--precision",
        "fp32",
        "--device",
        "cpu",
    ]
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command], check=True, capture_output=True, text=True, timeout=900
    )
    with Index.open(tmp_path / f"index-{documents}") as index:
        assert len(index) == documents
    return int(result.stdout)


@pytest.mark.slow
def test_indexing_ten_times_the_documents_takes_about_the_same_memory(tmp_path, tiny_model):
    small = peak_rss_of_indexing(tmp_path, tiny_model, 20_000)
    large = peak_rss_of_indexing(tmp_path, tiny_model, 200_000)
    print(f"\npeak RSS: 20,000 documents {small / 1024:.0f} MB, 200,000 documents {large / 1024:.0f} MB")
    assert large <= 1.5 * small
