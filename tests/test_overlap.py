"""`Index.add` with its steps overlapped stores exactly what it stores one step at a time, and stops whole on errors."""

import itertools
import threading

import numpy as np
import pytest

import searcher.embedder
from searcher import Index, Record
from searcher.config import EmbeddingSettings
from searcher.stages import Ahead
from searcher.store import DocumentStore

STAGES = ("searcher-read", "searcher-tokenize", "searcher-embed")


@pytest.fixture(scope="module")
def passage_embedder(tiny_model):
    from searcher.embedder import Embedder

    return Embedder(EmbeddingSettings(str(tiny_model), precision="fp32", chunk=32), "cpu")


def mixed_corpus(version):
    """Short texts, long texts cut into passages, FAQ entries with phrasings, repeated ids, an empty text."""
    records = []
    for i in range(40):
        if i % 5 == 0:
            text = f"Guide {i}. " + " ".join(f"Step {j} of guide {i} explains setting number {j}." for j in range(30))
            records.append(Record(f"doc-{i}", text, {"kind": "guide"}, heading=f"Guide {i}."))
        elif i % 5 == 1:
            phrasings = tuple(f"how do I do thing {i} way {k}" for k in range(i % 4 + 1))
            text = f"Question {i}? Answer {i} in a sentence."
            records.append(Record(f"doc-{i}", text, {}, phrasings, f"Question {i}?"))
        else:
            records.append(Record(f"doc-{i}", f"short text {i} about topic {i % 7}", {"n": i}))
    # Repeated ids: in the chunk after the first one's (with chunks of 7), and far later.
    records.append(Record("doc-30", "Guide 30, said again in the next chunk", {"kind": "guide"}))
    records.append(Record("doc-3", "short text 3 said again, later", {"n": 3}))
    records.append(Record("doc-41", "   "))
    if version:  # a second run: some texts change (the empty one gains some), some only fields, the rest are unchanged
        records = [
            Record(r.id, r.text + " (revised)", r.fields, r.phrasings, r.heading)
            if i % 3 == 0
            else Record(r.id, r.text, {**r.fields, "v": 2}, r.phrasings, r.heading)
            if i % 3 == 1
            else r
            for i, r in enumerate(records)
        ] + [Record(f"new-{i}", f"a new document {i}") for i in range(6)]
    return records


def stored(index):
    rows = [(d.id, d.text, d.fields) for d in index.documents()]
    vectors = [(document, owner, vector.tobytes()) for document, owner, vector in index.stored_vectors()]
    return rows, vectors


def report_counts(report):
    return {key: value for key, value in vars(report).items() if key not in ("seconds", "model_seconds")}


def test_overlapped_add_stores_the_same_rows_and_vectors(passage_embedder, tmp_path, monkeypatch):
    monkeypatch.setattr("searcher.index.WRITE_CHUNK", 7)  # several chunks, a repeated id in a neighbouring one
    monkeypatch.setattr(searcher.embedder, "STREAM_DOCUMENTS", 9)  # several groups in a chunk
    results = {}
    for overlap in (False, True):
        index = Index.create(tmp_path / f"overlap-{overlap}", embedder=passage_embedder)
        reports = [index.add(mixed_corpus(version), batch_size=4, overlap=overlap) for version in (0, 1, 1)]
        results[overlap] = stored(index), [report_counts(report) for report in reports], len(index.vectors)
        assert index.check() == []
        index.close()
    (rows, vectors), reports, faiss_count = results[True]
    assert results[True] == results[False]
    assert reports[0]["split"] and (reports[0]["added"], reports[0]["duplicates"]) == (40, 2)
    assert reports[1]["added"] == 7 and reports[1]["updated"] and reports[1]["unchanged"]
    assert reports[2]["added"] == 0 and reports[2]["unchanged"] >= 40  # the repeated ids are embedded again
    assert faiss_count == len(vectors) and len(rows) == 47
    assert np.frombuffer(vectors[0][2], dtype=np.float32).shape == (passage_embedder.dimension,)


class Boom(Exception):
    pass


def assert_stages_stopped():
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith(STAGES)]


def records(count):
    return [Record(str(i), f"sentence number {i} " + "word " * (i % 11)) for i in range(count)]


def test_an_error_in_the_tokenizer_is_raised_and_every_stage_stops(tiny_embedder, tmp_path, monkeypatch):
    monkeypatch.setattr("searcher.index.WRITE_CHUNK", 10)
    calls = []
    passages = type(tiny_embedder).passages

    def failing(self, documents):
        calls.append(len(documents))
        if len(calls) == 3:
            raise Boom("the tokenizer failed")
        return passages(self, documents)

    monkeypatch.setattr(type(tiny_embedder), "passages", failing)
    index = Index.create(tmp_path / "idx", embedder=tiny_embedder)
    with pytest.raises(Boom):
        index.add(records(100), batch_size=4)
    assert_stages_stopped()
    assert len(index) == 20  # the chunks before the failing one are stored whole
    assert index.check() == []


def test_an_error_in_the_store_is_raised_and_every_stage_stops(tiny_embedder, tmp_path, monkeypatch):
    monkeypatch.setattr("searcher.index.WRITE_CHUNK", 10)
    calls = []
    add_vectors = DocumentStore.add_vectors

    def failing(self, owners, vectors):
        calls.append(len(owners))
        if len(calls) == 5:
            raise Boom("the disk failed")
        return add_vectors(self, owners, vectors)

    monkeypatch.setattr(DocumentStore, "add_vectors", failing)
    index = Index.create(tmp_path / "idx", embedder=tiny_embedder)
    with pytest.raises(Boom):
        index.add(records(1000), batch_size=4)  # far more than the stages hold ahead
    assert_stages_stopped()
    assert len(index) == 14 and index.check() == []  # the first chunk (batches of 4, 4, 2), a batch of the next


def test_an_error_in_the_source_is_raised_after_the_chunks_before_it_are_stored(tiny_embedder, tmp_path, monkeypatch):
    monkeypatch.setattr("searcher.index.WRITE_CHUNK", 10)

    def source():
        yield from records(25)
        raise Boom("a malformed line")

    index = Index.create(tmp_path / "idx", embedder=tiny_embedder)
    with pytest.raises(Boom):
        index.add(source(), batch_size=4)
    assert_stages_stopped()
    assert len(index) == 20


def test_a_stage_raises_its_error_where_the_item_is_taken_and_stops_when_closed():
    def items():
        yield 1
        raise KeyError("the second item")

    stage = Ahead(items(), 1, "searcher-read-test")
    assert next(stage) == 1
    with pytest.raises(KeyError, match="the second item"):
        next(stage)
    endless = Ahead(itertools.count(), 2, "searcher-read-endless")
    assert next(endless) == 0
    endless.close()
    assert_stages_stopped()
    assert list(endless) == []
