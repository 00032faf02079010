"""Metadata filters: equality and `in` on stored fields, in every search mode, without losing recall."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import searcher.search
from searcher import Record
from searcher.cli import app
from searcher.errors import InvalidFilterError

runner = CliRunner()
PRODUCTS = ["mail", "calendar", "drive", "chat"]
RECORDS = [
    Record(
        f"d{i}",
        f"note {i} about {PRODUCTS[i % 4]} sync and export number {i * 7}",
        {"product": PRODUCTS[i % 4], "lang": "de" if i % 10 == 0 else "en", "priority": i % 3, "public": i % 2 == 0},
    )
    for i in range(400)
]


@pytest.fixture
def index(tiny_index):
    return tiny_index(RECORDS)


def passing(condition):
    return {record.id for record in RECORDS if condition(record.fields)}


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
@pytest.mark.parametrize(
    ("filters", "condition"),
    [
        ({"product": "drive"}, lambda f: f["product"] == "drive"),
        (
            {"product": {"in": ["mail", "chat"]}, "lang": "de"},
            lambda f: f["product"] in ("mail", "chat") and f["lang"] == "de",
        ),
        ({"priority": 2}, lambda f: f["priority"] == 2),
        ({"public": True}, lambda f: f["public"]),
    ],
)
def test_every_hit_passes_the_filter_and_k_are_found(index, mode, filters, condition):
    hits = index.search("sync and export", k=15, mode=mode, filters=filters)
    allowed = passing(condition)
    assert {hit.id for hit in hits} <= allowed
    assert len(hits) == min(15, len(allowed))


def test_a_filtered_dense_search_ranks_exactly_like_a_search_over_the_passing_documents(index):
    query = index.embedder.embed(["export of calendar notes"])[0]
    allowed = [record for record in RECORDS if record.fields["lang"] == "de"]
    vectors = index.embedder.embed([record.text for record in allowed])
    expected = [allowed[i].id for i in np.argsort(-(vectors @ query))[:5]]
    assert [hit.id for hit in index.search("export of calendar notes", k=5, filters={"lang": "de"})] == expected


def test_a_broad_filter_fetches_past_the_documents_it_leaves_out(index, monkeypatch):
    exact = [hit.id for hit in index.search("drive sync", k=10, filters={"lang": "en"})]
    monkeypatch.setattr(searcher.search, "FILTER_EXACT_LIMIT", 0)  # force the over-fetching path
    assert [hit.id for hit in index.search("drive sync", k=10, filters={"lang": "en"})] == exact


def test_a_filter_no_document_passes_gives_no_hits(index):
    assert index.search("sync", k=5, filters={"product": "fax"}) == []
    assert index.search("sync", k=5, filters={"missing-field": 1}) == []


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"product": {"eq": "mail"}}, 'use a value or {"in": [values]}'),
        ({"product": {"in": []}}, 'use a value or {"in": [values]}'),
        ({"product": ["mail"]}, "values are strings, numbers or booleans"),
        ({"product": None}, "values are strings, numbers or booleans"),
        ({'pro"duct': "mail"}, "invalid filter field name"),
        ({"product": {"in": list(range(1001))}}, "at most 1000 values"),
        (["product", "mail"], "a filter is an object"),
    ],
)
def test_malformed_filters_are_refused_with_a_reason(index, filters, message):
    with pytest.raises(InvalidFilterError, match=message.replace("[", r"\[").replace("{", r"\{")):
        index.search("sync", k=5, filters=filters)


def test_query_command_takes_a_json_filter(index):
    index.close()
    home, name = str(index.path.parent), index.path.name
    result = runner.invoke(
        app, ["query", "sync", "--index", name, "--home", home, "--json", "--filter", '{"product": "chat"}']
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["results"]
    assert hits and all(hit["fields"]["product"] == "chat" for hit in hits)
    result = runner.invoke(app, ["query", "sync", "--index", name, "--home", home, "--filter", "{product: chat}"])
    assert result.exit_code == 2 and "--filter is not valid JSON" in result.stderr
