"""`Index.search_many`: many queries, one forward pass, the same answers as one query at a time."""

import pytest

from searcher import Record
from searcher.embedder import Embedder
from searcher.errors import EmptyQueryError

DOCS = [
    Record("pw", "How do I reset my password?", {"product": "account"}),
    Record("bill", "Where are my invoices for billing?", {"product": "billing"}),
    Record("dark", "Does the app have a dark mode?", {"product": "display"}),
    Record("export", "Can I export my notes as Markdown?", {"product": "notes"}),
]
QUERIES = ["forgot my password", "invoice billing", "markdown export", "night theme"]


@pytest.fixture
def index(tiny_index):
    return tiny_index(DOCS, "many")


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_each_query_gets_what_a_single_search_gives(index, mode):
    many = index.search_many(QUERIES, k=3, mode=mode)
    singles = [index.search(query, k=3, mode=mode) for query in QUERIES]
    assert [[hit.id for hit in hits] for hits in many] == [[hit.id for hit in hits] for hits in singles]
    for hits, single in zip(many, singles, strict=True):
        assert [hit.score for hit in hits] == pytest.approx([hit.score for hit in single], abs=1e-5)


def test_all_queries_go_through_the_model_in_one_call(index, monkeypatch):
    calls = []
    embed = Embedder.embed
    monkeypatch.setattr(
        Embedder, "embed", lambda self, texts, *args: calls.append(list(texts)) or embed(self, texts, *args)
    )
    index.search_many(QUERIES, k=2)
    assert calls == [QUERIES]
    index.search_many(QUERIES, k=2, mode="keyword")  # keyword search needs no model at all
    assert len(calls) == 1


def test_filters_and_min_score_apply_to_every_query(index):
    many = index.search_many(QUERIES, k=4, filters={"product": "billing"}, min_score=-1.0)
    assert all([hit.id for hit in hits] == ["bill"] for hits in many)


def test_an_empty_query_anywhere_is_refused(index):
    with pytest.raises(EmptyQueryError):
        index.search_many(["fine", "  "])


def test_no_queries_no_answers(index):
    assert index.search_many([]) == []
