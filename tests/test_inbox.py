"""The inbox (logged questions the FAQ does not cover, grouped by meaning) and the FAQ audit: the library,
`calibrate`'s "not covered" cut, the commands' JSON and the HTTP endpoints."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_server import wait_ready
from typer.testing import CliRunner

from searcher import Index, Record
from searcher.cli import app as cli_app
from searcher.errors import ConfigError
from searcher.evaluate import BeirDataset, calibrate
from searcher.inbox import coverage, groups, inbox, span_seconds
from searcher.querylog import LoggedQuery
from searcher.server import ServerConfig, create_app

runner = CliRunner()


def faq(question, answer, entry_id):
    return Record(entry_id, f"{question} {answer}", {}, (), question)


ENTRIES = [
    faq("How do I reset my password?", "Use 'Forgot password' on the sign-in page.", "password"),
    faq("Where can I download my invoices?", "Invoices are under Billing, then History.", "invoices"),
    faq("How do I cancel my subscription?", "Open Billing and choose Cancel plan.", "cancel"),
    faq("How do I change my password?", "Open Settings, then Security, then Change password.", "change-password"),
]
COVERED = [
    "I forgot my password, how can I reset it",
    "reset password not working",
    "where are my invoices",
    "download invoice pdf",
    "cancel my plan",
    "how to stop my subscription",
]
# A gap: many customers asking, in their words, about something the FAQ never mentions.
GAP = [
    "does the mobile app work offline without internet",
    "can I use the app offline on a plane",
    "is there an offline mode for the mobile app",
    "using the app with no internet connection",
    "app offline access when travelling",
]
STRAY = ["what is the airspeed velocity of an unladen swallow"]


@pytest.fixture
def desk(tmp_path, bundled_embedder):
    """An FAQ index on the bundled model whose log holds covered questions, a gap and a stray question."""
    with Index.create(tmp_path / "desk", embedder=bundled_embedder) as index:
        index.add(ENTRIES)
        index.search_many(COVERED + GAP + STRAY, 3, log=True)
        yield index


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_dense_group_far_from_every_entry_is_in_the_inbox_and_a_stray_question_is_not():
    rng = np.random.default_rng(0)
    gap = unit(np.eye(8)[0] + 0.05 * rng.standard_normal((6, 8)))  # six wordings of one question
    covered = unit(np.eye(8)[1] + 0.05 * rng.standard_normal((5, 8)))
    stray = unit([np.eye(8)[2]])
    vectors = np.concatenate([covered, gap, stray])
    best = np.array([0.8] * 5 + [0.3] * 6 + [0.1])
    questions = [f"covered {i}" for i in range(5)] + [f"gap {i}" for i in range(6)] + ["stray"]
    centroids_seen = []

    def nearest(centroids):
        centroids_seen.append(centroids)
        return [("entry-1", 0.2)] * len(centroids)

    found = inbox(questions, vectors, best, 0.5, nearest)
    assert [sorted(group.queries) for group in found] == [[f"gap {i}" for i in range(6)]]
    assert found[0].as_json() == {
        "size": 6,
        "queries": found[0].queries,
        "nearest": {"id": "entry-1", "score": 0.2},
        "suggestion": "new",
    }
    assert np.allclose(np.linalg.norm(centroids_seen[0], axis=1), 1)
    assert np.isinf(coverage(vectors, best)[-1])  # the stray has no close neighbour


def test_a_group_close_to_an_entry_is_suggested_as_another_wording_of_it():
    vectors = unit(np.eye(4)[0] + 0.01 * np.arange(12).reshape(3, 4))
    found = inbox(["a", "b", "c"], vectors, np.array([0.3, 0.3, 0.3]), 0.5, lambda c: [("pw", 0.55)] * len(c))
    assert found[0].suggestion == "alternative" and found[0].nearest_id == "pw"


def test_groups_are_biggest_first_with_their_most_central_question_first():
    vectors = unit([[1, 0, 0], [1, 0.1, 0], [1, -0.1, 0], [0, 1, 0], [0, 1, 0.1]])
    found = groups(vectors)
    assert [sorted(group.tolist()) for group in found] == [[0, 1, 2], [3, 4]]
    assert found[0][0] == 0


def test_calibrate_stores_a_not_covered_cut_beside_the_threshold(desk):
    assert desk.manifest.not_covered is None
    judged = {f"q{i}": text for i, text in enumerate(COVERED)}
    answers = ["password", "password", "invoices", "invoices", "cancel", "cancel"]
    qrels = {f"q{i}": {answer: 1} for i, answer in enumerate(answers)}
    result = calibrate(desk, BeirDataset("judged", desk.path, judged, qrels), 0.5)
    assert result.not_covered is not None and desk.manifest.not_covered == pytest.approx(result.not_covered)
    assert desk.manifest.calibration["dense"]["not_covered"] == pytest.approx(result.not_covered)
    assert desk.query_log().count() == len(COVERED + GAP + STRAY)  # judged questions are not logged


def test_the_inbox_groups_the_gap_and_leaves_out_covered_and_stray_questions(desk):
    found = desk.inbox(min_score=0.45)
    assert len(found) == 1
    assert sorted(found[0].queries) == sorted(GAP)
    assert found[0].suggestion == "new" and found[0].nearest_score < 0.45


def test_without_a_cut_the_inbox_says_how_to_get_one(desk):
    with pytest.raises(ConfigError, match="searcher calibrate"):
        desk.inbox()


def test_the_inbox_reads_only_questions_asked_since(desk):
    assert desk.inbox(since=2e9, min_score=0.45) == []
    old = [LoggedQuery(1_000.0, text, "dense", None, [], None, False) for text in GAP]
    desk.query_log().clear()
    desk.query_log().record(old)  # retention drops rows this old at once: nothing to group
    assert desk.inbox(min_score=0.45) == []


def test_inbox_json_has_the_documented_shape(desk):
    desk.close()
    result = runner.invoke(
        cli_app, ["inbox", "desk", "--home", str(desk.path.parent), "--min-score", "0.45", "--json", "--since", "1d"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"index", "groups"} and report["index"] == "desk"
    (group,) = report["groups"]
    assert set(group) == {"size", "queries", "nearest", "suggestion"}
    assert group["size"] == len(group["queries"]) == len(GAP)
    assert set(group["nearest"]) == {"id", "score"} and group["suggestion"] in ("alternative", "new")
    table = runner.invoke(cli_app, ["inbox", "desk", "--home", str(desk.path.parent), "--min-score", "0.45"])
    assert table.exit_code == 0 and "new entry" in table.stdout


def test_audit_finds_confusable_entries_and_unmatched_ones(desk):
    report = desk.audit(min_similarity=0.6)
    assert ("change-password", "password") in {tuple(sorted(pair[:2])) for pair in report.confusable}
    assert "change-password" in report.never_matched and "password" not in report.never_matched
    json_report = report.as_json()
    assert set(json_report) == {"confusable", "never_matched", "not_self_retrieved"}
    assert all(set(pair) == {"a", "b", "score"} for pair in json_report["confusable"])


def test_an_entry_its_own_question_does_not_find_is_reported(tmp_path, bundled_embedder):
    with Index.create(tmp_path / "odd", embedder=bundled_embedder) as index:
        # Its heading asks about passwords, its answer is about invoices: the heading finds a password entry.
        odd = faq("Password help", "Invoices are under Billing, then History. Download invoices there.", "odd")
        index.add([*ENTRIES, odd])
        assert index.audit().not_self_retrieved == ["odd"]


def test_audit_json_from_the_command(desk):
    desk.close()
    result = runner.invoke(cli_app, ["audit", "desk", "--home", str(desk.path.parent), "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"confusable", "never_matched", "not_self_retrieved"}


def test_inbox_and_audit_over_http_need_the_key(desk, monkeypatch):
    desk.close()
    monkeypatch.setenv("DESK_KEY", "secret")
    config = ServerConfig(("desk",), str(desk.path.parent), api_key_env="DESK_KEY")
    with TestClient(create_app(config)) as client:
        wait_ready(client)
        assert client.get("/v1/indexes/desk/inbox").status_code == 401
        headers = {"Authorization": "Bearer secret"}
        answer = client.get("/v1/indexes/desk/inbox", params={"min_score": 0.45, "since": "7d"}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert [sorted(group["queries"]) for group in answer.json()["groups"]] == [sorted(GAP)]
        assert client.get("/v1/indexes/desk/inbox", headers=headers).status_code == 400  # no cut calibrated
        assert client.get("/v1/indexes/desk/inbox", params={"since": "soon"}, headers=headers).status_code == 400
        audit = client.get("/v1/indexes/desk/audit", headers=headers)
        assert audit.status_code == 200 and set(audit.json()) == {"confusable", "never_matched", "not_self_retrieved"}


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600)])
def test_spans(text, seconds):
    assert span_seconds(text) == seconds


@pytest.mark.parametrize("text", ["7", "d", "-1d", "7y", ""])
def test_a_bad_span_is_refused(text):
    with pytest.raises(ConfigError, match="span"):
        span_seconds(text)
