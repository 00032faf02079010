"""Feedback on answers: recorded over HTTP and by `searcher feedback`, exported as the pairs `searcher tune
--pairs` reads, the latest word on a pair winning."""

import pytest
from fastapi.testclient import TestClient
from test_query_log import run
from test_server import wait_ready
from typer.testing import CliRunner

from searcher import Record
from searcher.errors import EmptyQueryError
from searcher.querylog import QueryLog
from searcher.server import ServerConfig, create_app
from searcher.tune import read_feedback

runner = CliRunner()
DOCS = [
    Record("pw", "How do I reset my password?", {"product": "account"}),
    Record("bill", "Where are my invoices for billing?", {"product": "billing"}),
    Record("dark", "Does the app have a dark mode?", {"product": "app"}),
]
TEXTS = {record.id: record.text for record in DOCS}


@pytest.fixture
def home(tiny_index):
    index = tiny_index(DOCS, "faq")
    index.close()
    return index.path.parent


def test_helpful_pairs_are_distinct_and_the_latest_feedback_wins(tmp_path):
    with QueryLog.open(tmp_path) as log:
        log.feedback("forgot my password", "pw", True)
        log.feedback("forgot my password", "pw", True)
        log.feedback("where is my bill", "bill", True)
        log.feedback("where is my bill", "bill", False)  # changed its mind: left out
        log.feedback("night theme", "dark", False)
        log.feedback("night theme", "pw", False)
        log.feedback("night theme", "pw", True)  # the latest says helpful
        assert log.helpful_pairs() == [
            {"query": "forgot my password", "id": "pw"},
            {"query": "night theme", "id": "pw"},
        ]
        assert [(row.query, row.id, row.helpful) for row in log.feedback_entries()][:2] == [
            ("forgot my password", "pw", True),
            ("forgot my password", "pw", True),
        ]
        with pytest.raises(EmptyQueryError):
            log.feedback("   ", "pw", True)
        assert log.clear() == 7 and log.helpful_pairs() == []


def test_http_feedback_exports_to_what_tune_reads(home, tmp_path):
    feedback = [
        ("I forgot my login", "pw", True),
        ("where is my bill", "bill", True),
        ("where is my bill", "bill", False),
        ("night theme please", "dark", True),
        ("night theme please", "pw", False),
    ]
    with TestClient(create_app(ServerConfig(("faq",), str(home)))) as client:  # logging off: feedback is kept
        wait_ready(client)
        for query, document, helpful in feedback:
            body = {"index": "faq", "query": query, "id": document, "helpful": helpful}
            response = client.post("/v1/feedback", json=body)
            assert (response.status_code, response.json()) == (200, {"recorded": True})
    pairs = tmp_path / "pairs.jsonl"
    result = run("feedback", "faq", "--export", pairs, "--home", home)
    assert result.exit_code == 0 and "Wrote 2 helpful pairs" in result.stdout
    assert [(pair.query, pair.document) for pair in read_feedback(pairs, TEXTS)] == [
        ("I forgot my login", "pw"),
        ("night theme please", "dark"),
    ]
    with QueryLog.open(home / "faq") as log:
        assert log.count() == 0 and len(log.feedback_entries()) == 5


def test_cli_feedback_records_helpful_and_unhelpful(home, tmp_path):
    assert run("feedback", "faq", "--query", "reset my password", "--id", "pw", "--home", home).exit_code == 0
    result = run("feedback", "faq", "--query", "dark theme", "--id", "bill", "--unhelpful", "--home", home)
    assert result.exit_code == 0 and "not helpful" in result.stdout
    pairs = tmp_path / "pairs.jsonl"
    assert run("feedback", "faq", "--export", pairs, "--home", home).exit_code == 0
    assert [(pair.query, pair.document) for pair in read_feedback(pairs, TEXTS)] == [("reset my password", "pw")]
    missing = run("feedback", "faq", "--query", "reset my password", "--home", home)
    assert missing.exit_code == 2 and "give --query and --id" in missing.stderr


BAD_FEEDBACK = [
    ({"index": "nothing", "query": "q", "id": "pw", "helpful": True}, 404),
    ({"index": "faq", "query": "", "id": "pw", "helpful": True}, 422),
    ({"index": "faq", "query": "q" * 10_001, "id": "pw", "helpful": True}, 422),
    ({"index": "faq", "query": "q", "id": "", "helpful": True}, 422),
    ({"index": "faq", "query": "q", "id": "pw", "helpful": "yes"}, 422),
    ({"index": "faq", "query": "q", "id": "pw"}, 422),
    ({"index": "faq", "query": "q", "id": "pw", "helpful": True, "extra": 1}, 422),
    ({"index": "faq", "query": "   ", "id": "pw", "helpful": True}, 400),
]


def test_bad_feedback_is_refused_and_stores_nothing(home):
    with TestClient(create_app(ServerConfig(("faq",), str(home)))) as client:
        wait_ready(client)
        for body, status in BAD_FEEDBACK:
            response = client.post("/v1/feedback", json=body)
            assert (response.status_code, bool(response.json()["error"])) == (status, True), body
    assert not (home / "faq" / "queries.sqlite").exists()


def test_feedback_needs_the_api_key(home, monkeypatch):
    monkeypatch.setenv("SUPPORT_KEY", "s3cret-key")
    body = {"index": "faq", "query": "forgot password", "id": "pw", "helpful": True}
    with TestClient(create_app(ServerConfig(("faq",), str(home), api_key_env="SUPPORT_KEY"))) as client:
        wait_ready(client)
        assert client.post("/v1/feedback", json=body).status_code == 401
        good = {"Authorization": "Bearer s3cret-key"}
        assert client.post("/v1/feedback", json=body, headers=good).status_code == 200
