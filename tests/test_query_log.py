"""The question log: off by default, on per search or per index, what an entry holds, retention, clearing, the
`searcher log` command, and the server's log writer."""

import json
import time

import pytest
from fastapi.testclient import TestClient
from test_server import wait_ready
from typer.testing import CliRunner

from searcher import Index, Record
from searcher.cli import app as cli_app
from searcher.errors import ConfigError
from searcher.querylog import DAY_S, LoggedQuery, QueryLog
from searcher.server import CONFIG_VARIABLE, ServerConfig, create_app

runner = CliRunner()
DOCS = [
    Record("pw", "How do I reset my password?", {"product": "account"}),
    Record("bill", "Where are my invoices for billing?", {"product": "billing"}),
    Record("dark", "Does the app have a dark mode?", {"product": "app"}),
]


@pytest.fixture
def index(tiny_index):
    with tiny_index(DOCS, "faq") as opened:
        yield opened


def run(*args):
    return runner.invoke(cli_app, [str(arg) for arg in args])


def test_nothing_is_logged_by_default(index):
    assert (index.manifest.log_queries, index.manifest.log_days) == (False, 90)
    index.search("reset my password")
    index.search_many(["invoices", "dark mode"], mode="hybrid")
    assert not (index.path / "queries.sqlite").exists()
    assert index.query_log().count() == 0


def test_a_logged_search_keeps_its_question_hits_and_threshold_verdict(index):
    index.set_threshold("dense", 2.0, {})  # above any cosine: every best hit is under it
    before = time.time()
    hits = index.search("forgot my password", k=2, filters={"product": {"in": ["account", "app"]}}, log=True)
    [entry] = index.query_log().entries()
    assert before <= entry.time <= time.time()
    assert (entry.query, entry.mode, entry.filters) == (
        "forgot my password",
        "dense",
        {"product": {"in": ["account", "app"]}},
    )
    assert entry.hits == [(hit.id, hit.score) for hit in hits] and len(hits) == 2
    assert entry.best_score == hits[0].score and entry.below_threshold

    index.set_threshold("dense", -1.0, {})
    index.search("forgot my password", k=1, log=True)
    assert not index.query_log().entries()[-1].below_threshold
    index.search("forgot my password", k=1, mode="keyword", log=True)  # no threshold for keyword search
    assert not index.query_log().entries()[-1].below_threshold


def test_a_search_without_hits_is_logged_with_no_best_score(index):
    index.search("password", min_score=5.0, log=True)
    [entry] = index.query_log().entries()
    assert (entry.hits, entry.best_score, entry.below_threshold) == ([], None, False)


def test_the_index_setting_turns_logging_on_and_a_search_may_say_otherwise(index):
    index.set_logging(True, days=30)
    index.search_many(["reset password", "invoices"])
    index.search("dark mode", log=False)
    assert [entry.query for entry in index.query_log().entries()] == ["reset password", "invoices"]
    with Index.open(index.path) as reopened:
        assert (reopened.manifest.log_queries, reopened.manifest.log_days) == (True, 30)
    index.set_logging(False)  # the days stay as they were
    index.search("dark mode")
    assert index.query_log().count() == 2 and index.manifest.log_days == 30
    with pytest.raises(ConfigError):
        index.set_logging(True, days=0)


def logged(query, days_ago):
    return LoggedQuery(time.time() - days_ago * DAY_S, query, "dense", None, [("pw", 0.5)], 0.5, False)


def test_the_latest_questions_since_a_time_and_the_documents_found_first(tmp_path):
    with QueryLog.open(tmp_path) as log:
        log.record([logged("first", 3), logged("second", 2), logged("third", 1)])
        log.record([LoggedQuery(time.time(), "no hit", "dense", None, [], None, False)])
        assert [row.query for row in log.latest(2)] == ["no hit", "third"]
        assert [row.query for row in log.latest(5, since=time.time() - 2.5 * DAY_S)] == ["no hit", "third", "second"]
        assert log.first_hits() == {"pw"}


def test_rows_past_the_retention_are_deleted_as_new_ones_come(tmp_path):
    log = QueryLog.open(tmp_path, retention_days=7)
    log.record([logged("old", 8), logged("recent", 6)])
    log.feedback("old question", "pw", True, time=time.time() - 8 * DAY_S)
    log.feedback("new question", "pw", True)
    assert [row.query for row in log.entries()] == ["recent"]
    assert [feedback.query for feedback in log.feedback_entries()] == ["new question"]
    assert [row.query for row in log.entries(since=time.time() - 1 * DAY_S)] == []
    assert log.prune(5) == 1 and log.count() == 0
    log.close()


def test_a_lone_surrogate_does_not_cost_the_batch_it_came_in(tmp_path):
    with QueryLog.open(tmp_path) as log:
        log.record([logged("half a pair \ud800 here", 0), logged("plain", 0)])
        assert [row.query for row in log.entries()] == ["half a pair \ufffd here", "plain"]


def test_the_retention_is_the_index_setting(index):
    index.set_logging(True, days=3)
    index.query_log().record([logged("old", 4), logged("fresh", 2)])
    assert [row.query for row in index.query_log().entries()] == ["fresh"]


def test_log_command_sets_shows_and_clears(index):
    home = index.path.parent
    result = run("log", "faq", "--on", "--days", "30", "--home", home)
    assert result.exit_code == 0 and "Question log of faq: on, rows kept 30 days" in result.stdout
    for question in ("forgot my password", "where are invoices"):
        assert run("query", question, "--index", "faq", "--home", home, "-k", "2").exit_code == 0

    shown = json.loads(run("log", "faq", "--json", "--home", home).stdout)
    assert set(shown) == {"index", "logging", "days", "queries"}
    assert (shown["index"], shown["logging"], shown["days"]) == ("faq", True, 30)
    assert [row["query"] for row in shown["queries"]] == ["where are invoices", "forgot my password"]
    newest = shown["queries"][0]
    assert set(newest) == {"time", "query", "mode", "filters", "hits", "best_score", "below_threshold"}
    assert len(newest["hits"]) == 2 and set(newest["hits"][0]) == {"id", "score"}
    assert newest["best_score"] == newest["hits"][0]["score"] and newest["below_threshold"] is False

    table = run("log", "faq", "--home", home)
    assert table.exit_code == 0 and "Question log of faq: on, rows kept 30 days" in table.stdout
    assert "forgot" in table.stdout and "latest questions" in table.stdout

    cleared = run("log", "faq", "--clear", "--home", home)
    assert cleared.exit_code == 0 and "2 rows removed" in cleared.stdout and "No questions logged." in cleared.stdout
    off = json.loads(run("log", "faq", "--off", "--json", "--home", home).stdout)
    assert (off["logging"], off["days"], off["queries"]) == (False, 30, [])


def serve(index, **settings):
    index.close()
    return TestClient(create_app(ServerConfig(("faq",), str(index.path.parent), **settings)))


def search_twice(client):
    wait_ready(client)
    assert client.post("/v1/search", json={"index": "faq", "query": "reset password", "k": 2}).status_code == 200
    batch = {"index": "faq", "queries": ["invoices", "dark"], "k": 1, "mode": "keyword"}
    assert client.post("/v1/search/batch", json=batch).status_code == 200


def test_the_server_logs_every_search_with_log_queries(index):
    with serve(index, log_queries=True) as client:  # closing the app writes what its log writer holds
        search_twice(client)
    with QueryLog.open(index.path) as log:
        entries = log.entries()
    assert [(row.query, row.mode, len(row.hits)) for row in entries] == [
        ("reset password", "dense", 2),
        ("invoices", "keyword", 1),
        ("dark", "keyword", 1),
    ]


def test_the_server_logs_nothing_unless_asked(index):
    with serve(index) as client:
        search_twice(client)
    assert not (index.path / "queries.sqlite").exists()


def test_the_server_follows_the_index_setting(index):
    index.set_logging(True)
    with serve(index) as client:
        search_twice(client)
    with QueryLog.open(index.path) as log:
        assert log.count() == 3


def test_log_settings_reach_the_workers(monkeypatch):
    config = ServerConfig(("faq",), log_queries=True, log_days=7)
    monkeypatch.setenv(CONFIG_VARIABLE, config.to_environment())
    assert ServerConfig.from_environment() == config
    with pytest.raises(ConfigError):
        ServerConfig(("faq",), log_days=0).check()
