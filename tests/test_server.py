"""The HTTP API: search, batch search, upserts, deletes, index listing, health, API key, limits and errors."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import searcher.server
from searcher import EmbeddingSettings, Index, Record
from searcher.cli import app as cli_app
from searcher.errors import ModelMismatchError
from searcher.server import MAX_BODY_BYTES, ServerConfig, create_app

runner = CliRunner()
DOCS = [
    Record("pw", "How do I reset my password?", {"product": "account", "lang": "en"}),
    Record("bill", "Where are my invoices for billing?", {"product": "billing", "lang": "en"}),
    Record("dark", "Does the app have a dark mode?", {"product": "app", "lang": "en"}),
    Record("export", "Export notes as markdown files", {"product": "app", "lang": "de"}),
]


@pytest.fixture
def home(tiny_index):
    index = tiny_index(DOCS, "faq")
    index.close()
    return index.path.parent


def wait_serving(process, base, timeout=120):
    """Until the `searcher serve` PROCESS answers /readyz at BASE; failing with its output if it stops first or
    TIMEOUT seconds pass."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    if process.poll() is None:
        process.kill()
    raise AssertionError(f"searcher serve never became ready: {process.communicate(timeout=30)!r}")


def wait_ready(client, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("never ready")


@pytest.fixture
def client(home):
    with TestClient(create_app(ServerConfig(("faq",), str(home)))) as test_client:
        wait_ready(test_client)
        yield test_client


def test_search_answers_as_the_query_command_does(client, home):
    response = client.post("/v1/search", json={"index": "faq", "query": "forgot my password", "k": 3})
    assert response.status_code == 200
    command = runner.invoke(
        cli_app, ["query", "forgot my password", "--index", "faq", "--home", str(home), "-k", "3", "--json"]
    )
    assert response.json() == json.loads(command.stdout)
    assert [hit["rank"] for hit in response.json()["results"]] == [1, 2, 3]


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_batch_search_answers_each_query_in_order(client, mode):
    queries = ["reset password", "invoices billing", "markdown export"]
    batch = client.post("/v1/search/batch", json={"index": "faq", "queries": queries, "k": 2, "mode": mode})
    assert batch.status_code == 200
    singles = [
        client.post("/v1/search", json={"index": "faq", "query": q, "k": 2, "mode": mode}).json() for q in queries
    ]
    # One forward pass for the batch: scores agree with single queries' up to padding's rounding.
    assert [[hit["id"] for hit in answer["results"]] for answer in batch.json()["results"]] == [
        [hit["id"] for hit in answer["results"]] for answer in singles
    ]
    for answer, single in zip(batch.json()["results"], singles, strict=True):
        assert [hit["score"] for hit in answer["results"]] == pytest.approx(
            [hit["score"] for hit in single["results"]], abs=1e-5
        )
        assert {key: value for key, value in answer.items() if key != "results"} == {
            key: value for key, value in single.items() if key != "results"
        }


def test_filters_and_min_score_apply(client):
    hits = client.post(
        "/v1/search", json={"index": "faq", "query": "app", "k": 4, "filter": {"product": {"in": ["app"]}}}
    ).json()
    assert {hit["id"] for hit in hits["results"]} == {"dark", "export"}
    hits = client.post(
        "/v1/search", json={"index": "faq", "query": "app", "k": 4, "filter": {"product": "app", "lang": "de"}}
    ).json()
    assert [hit["id"] for hit in hits["results"]] == ["export"]
    hits = client.post("/v1/search", json={"index": "faq", "query": "app", "k": 4, "min_score": 2.0}).json()
    assert hits["results"] == []


def test_upsert_then_delete(client):
    documents = [
        {"id": "vpn", "text": "How do I connect to the VPN?", "fields": {"product": "network"}},
        {"id": 7, "text": "Printer is offline", "phrasings": ["my printer does not print"]},
    ]
    report = client.put("/v1/indexes/faq/documents", json={"documents": documents}).json()
    assert (report["added"], report["updated"], report["documents"]) == (2, 0, 2)
    again = client.put("/v1/indexes/faq/documents", json={"documents": documents}).json()
    assert (again["added"], again["unchanged"]) == (0, 2)
    hits = client.post("/v1/search", json={"index": "faq", "query": "How do I connect to the VPN?", "k": 1}).json()[
        "results"
    ]
    assert hits[0]["id"] == "vpn" and hits[0]["fields"] == {"product": "network"}
    assert client.get("/v1/indexes/faq").json()["documents"] == 6
    deleted = client.request("DELETE", "/v1/indexes/faq/documents", json={"ids": ["vpn", "7", "nope"]}).json()
    assert deleted == {"deleted": ["7", "vpn"], "not_found": ["nope"]}
    hits = client.post("/v1/search", json={"index": "faq", "query": "How do I connect to the VPN?", "k": 10}).json()[
        "results"
    ]
    assert {hit["id"] for hit in hits} == {"pw", "bill", "dark", "export"}


def test_index_listing_and_manifest(client):
    assert client.get("/v1/indexes").json() == {"indexes": [{"name": "faq", "documents": 4}]}
    details = client.get("/v1/indexes/faq").json()
    assert details["name"] == "faq" and details["documents"] == 4
    assert {"model", "fingerprint", "pooling", "precision", "index_type"} <= set(details["manifest"])
    assert client.get("/docs").status_code == 200 and "/v1/search" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        (
            "post",
            "/v1/search",
            {"index": "faq", "query": "x", "k": 101},
            422,
            "k: Input should be less than or equal to 100",
        ),
        (
            "post",
            "/v1/search",
            {"index": "faq", "query": "x", "k": 0},
            422,
            "k: Input should be greater than or equal to 1",
        ),
        ("post", "/v1/search", {"index": "faq", "query": ""}, 422, "query: String should have at least 1 character"),
        ("post", "/v1/search", {"index": "faq", "query": "   "}, 400, "empty query"),
        ("post", "/v1/search", {"index": "faq", "query": "x" * 10_001}, 422, "query: String should have at most 10000"),
        (
            "post",
            "/v1/search",
            {"index": "faq", "query": "x", "mode": "fuzzy"},
            422,
            "mode: Input should be 'dense', 'keyword' or 'hybrid'",
        ),
        (
            "post",
            "/v1/search",
            {"index": "faq", "query": "x", "colour": 1},
            422,
            "colour: Extra inputs are not permitted",
        ),
        ("post", "/v1/search", {"index": "faq"}, 422, "query: Field required"),
        ("post", "/v1/search", {"index": "other", "query": "x"}, 404, "index 'other' is not served here"),
        (
            "post",
            "/v1/search",
            {"index": "faq", "query": "x", "filter": {"product": {"eq": 1}}},
            400,
            "filter on 'product'",
        ),
        ("post", "/v1/search/batch", {"index": "faq", "queries": []}, 422, "queries: List should have at least 1 item"),
        (
            "post",
            "/v1/search/batch",
            {"index": "faq", "queries": ["q"] * 65},
            422,
            "queries: List should have at most 64 items",
        ),
        ("put", "/v1/indexes/faq/documents", {"documents": [{"id": "a"}]}, 422, "documents.0.text: Field required"),
        ("put", "/v1/indexes/faq/documents", {"documents": [{"id": "", "text": "t"}]}, 422, "documents.0.id"),
        (
            "put",
            "/v1/indexes/nope/documents",
            {"documents": [{"id": "a", "text": "t"}]},
            404,
            "index 'nope' is not served here",
        ),
        ("delete", "/v1/indexes/faq/documents", {"ids": []}, 422, "ids: List should have at least 1 item"),
        ("get", "/v1/indexes/nope", None, 404, "index 'nope' is not served here"),
        ("get", "/v2/nothing", None, 404, "Not Found"),
        ("patch", "/v1/search", None, 405, "Method Not Allowed"),
    ],
)
def test_every_bad_request_gets_a_4xx_json_error_with_a_message(client, method, path, body, status, message):
    response = client.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_malformed_json_and_oversized_bodies_are_refused(client):
    response = client.post(
        "/v1/search", content=b'{"index": "faq", "query": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and "JSON decode error" in response.json()["error"]
    huge = {"documents": [{"id": "big", "text": "x" * (MAX_BODY_BYTES + 1)}]}
    response = client.put("/v1/indexes/faq/documents", json=huge)
    assert response.status_code == 413 and "request body over" in response.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    response = client.post("/v1/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_an_api_key_guards_every_endpoint_but_health(home, monkeypatch):
    monkeypatch.setenv("SUPPORT_KEY", "s3cret-key")
    with TestClient(create_app(ServerConfig(("faq",), str(home), api_key_env="SUPPORT_KEY"))) as client:
        wait_ready(client)
        assert client.get("/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-key"}):
            for method, path in (
                ("POST", "/v1/search"),
                ("GET", "/v1/indexes"),
                ("GET", "/docs"),
                ("GET", "/openapi.json"),
            ):
                response = client.request(method, path, headers=headers, json={"index": "faq", "query": "x"})
                assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
                assert "API key" in response.json()["error"]
        good = {"Authorization": "Bearer s3cret-key"}
        assert client.post("/v1/search", headers=good, json={"index": "faq", "query": "password"}).status_code == 200


def test_an_unset_api_key_variable_is_refused_before_serving(home, monkeypatch):
    monkeypatch.delenv("SUPPORT_KEY", raising=False)
    result = runner.invoke(cli_app, ["serve", "--index", "faq", "--home", str(home), "--api-key-env", "SUPPORT_KEY"])
    assert result.exit_code != 0 and "the API key variable SUPPORT_KEY is not set or empty" in result.stderr
    result = runner.invoke(cli_app, ["serve", "--index", "nothing", "--home", str(home)])
    assert result.exit_code != 0 and "no index named 'nothing'" in result.stderr and "Serving" not in result.stdout


def test_cors_is_off_unless_an_origin_is_allowed(home):
    preflight = {"Origin": "https://help.example.com", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(ServerConfig(("faq",), str(home)))) as client:
        assert "access-control-allow-origin" not in client.options("/v1/search", headers=preflight).headers
    with TestClient(
        create_app(ServerConfig(("faq",), str(home), cors_origins=("https://help.example.com",)))
    ) as client:
        response = client.options("/v1/search", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://help.example.com"


def test_alive_before_ready_and_searches_wait_for_ready(home, monkeypatch):
    release = threading.Event()
    original = searcher.server.ServedIndex.__init__

    def slow_load(self, *args):
        release.wait(30)
        original(self, *args)

    monkeypatch.setattr(searcher.server.ServedIndex, "__init__", slow_load)
    with TestClient(create_app(ServerConfig(("faq",), str(home)))) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 503
        response = client.post("/v1/search", json={"index": "faq", "query": "password"})
        assert response.status_code == 503 and "still loading" in response.json()["error"]
        release.set()
        wait_ready(client)
        assert client.post("/v1/search", json={"index": "faq", "query": "password"}).status_code == 200


def test_a_failed_load_is_reported_by_readyz_and_every_call(home, monkeypatch, caplog):
    def broken(self, *args):
        raise RuntimeError("out of memory while loading weights")

    monkeypatch.setattr(searcher.server.ServedIndex, "__init__", broken)
    with TestClient(create_app(ServerConfig(("faq",), str(home)))) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        failure = "index 'faq' cannot be served (RuntimeError); see the server log"
        assert client.get("/readyz").json() == {"status": "failed", "error": failure}
        response = client.post("/v1/search", json={"index": "faq", "query": "password"})
        assert response.status_code == 503 and response.json()["error"] == failure
    assert "cannot serve index 'faq': out of memory while loading weights" in caplog.text


def test_searches_go_on_while_a_write_is_in_progress(home, monkeypatch):
    writing, finish = threading.Event(), threading.Event()
    original_add = Index.add

    def slow_add(index, records, *args, **kwargs):
        writing.set()
        finish.wait(30)
        return original_add(index, records, *args, **kwargs)

    monkeypatch.setattr(Index, "add", slow_add)
    api = create_app(ServerConfig(("faq",), str(home)))

    async def scenario():
        async with (
            api.router.lifespan_context(api),
            httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as client,
        ):
            while (await client.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.05)
            upsert = asyncio.create_task(
                client.put("/v1/indexes/faq/documents", json={"documents": [{"id": "new", "text": "brand new"}]})
            )
            while not writing.is_set():
                await asyncio.sleep(0.01)
            response = await asyncio.wait_for(
                client.post("/v1/search", json={"index": "faq", "query": DOCS[0].text, "k": 1}), 10
            )
            assert not upsert.done(), "the write finished before the search: nothing was tested"
            assert response.status_code == 200 and response.json()["results"][0]["id"] == "pw"
            finish.set()
            assert (await upsert).json()["added"] == 1
            assert (await client.get("/v1/indexes/faq")).json()["documents"] == 5

    asyncio.run(scenario())


def test_an_index_refuses_a_model_that_embeds_differently(home, tiny_model_copy):
    from searcher.embedder import Embedder

    with pytest.raises(ModelMismatchError, match="embeds with other settings"):
        Index.open("faq", home, embedder=Embedder(EmbeddingSettings(str(tiny_model_copy), layer=-2)))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_real_server_process_answers_over_http(home):
    port = free_port()
    environment = os.environ | {"SUPPORT_KEY": "k-123"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "searcher",
            "serve",
            "--index",
            "faq",
            "--home",
            str(home),
            "--port",
            str(port),
            "--api-key-env",
            "SUPPORT_KEY",
        ],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_serving(process, base)
        headers = {"Authorization": "Bearer k-123"}
        hits = httpx.post(
            f"{base}/v1/search", headers=headers, json={"index": "faq", "query": "invoices", "k": 2}
        ).json()
        assert len(hits["results"]) == 2 and hits["index"] == "faq"
        assert httpx.post(f"{base}/v1/search", json={"index": "faq", "query": "invoices"}).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "Serving faq at http://127.0.0.1" in output
