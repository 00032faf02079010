"""GET /metrics: Prometheus text with requests, latencies, statuses, queues, batch sizes, documents and model load
times, behind the API key unless --metrics-public."""

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_server import DOCS, wait_ready
from typer.testing import CliRunner

import searcher.server
from searcher.cli import app as cli_app
from searcher.server import ServerConfig, create_app

NAMES = {
    "searcher_requests",
    "searcher_request_duration_seconds",
    "searcher_responses",
    "searcher_embed_queue_texts",
    "searcher_read_queue_requests",
    "searcher_embed_batch_texts",
    "searcher_index_documents",
    "searcher_model_load_seconds",
}


@pytest.fixture
def home(tiny_index):
    index = tiny_index(DOCS, "faq")
    index.close()
    return index.path.parent


@pytest.fixture
def client(home):
    with TestClient(create_app(ServerConfig(("faq",), str(home)))) as test_client:
        wait_ready(test_client)
        yield test_client


def scrape(client, **headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_name_every_series_and_describe_the_loaded_index(client):
    response = client.get("/metrics")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert names >= NAMES
    samples = scrape(client)
    assert value(samples, "searcher_index_documents", index="faq") == len(DOCS)
    assert value(samples, "searcher_model_load_seconds", index="faq") > 0
    assert value(samples, "searcher_embed_queue_texts", index="faq") == 0
    assert value(samples, "searcher_read_queue_requests", index="faq") == 0
    assert value(samples, "searcher_embed_batch_texts_count", index="faq") >= 1  # the warm-up pass


def test_requests_are_counted_and_timed_by_endpoint_mode_and_status(client):
    before = scrape(client)
    search = {"endpoint": "/v1/search", "mode": "dense"}
    assert client.post("/v1/search", json={"index": "faq", "query": "password"}).status_code == 200
    assert client.post("/v1/search", json={"index": "faq", "query": "password", "mode": "keyword"}).status_code == 200
    assert client.post("/v1/search", json={"index": "nope", "query": "password"}).status_code == 404
    assert client.post("/v1/search", json={"index": "faq", "query": "x", "k": 0}).status_code == 422
    batch = client.post("/v1/search/batch", json={"index": "faq", "queries": ["a", "b", "c"], "mode": "hybrid"})
    assert batch.status_code == 200
    assert client.get("/no/such/path/123").status_code == 404
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("searcher_requests_total", **search) == 2  # the one answered and the unknown index
    assert moved("searcher_request_duration_seconds_count", **search) == 2
    assert moved("searcher_request_duration_seconds_sum", **search) > 0
    assert moved("searcher_requests_total", endpoint="/v1/search", mode="keyword") == 1
    assert moved("searcher_requests_total", endpoint="/v1/search", mode="none") == 1  # refused before its handler
    assert moved("searcher_requests_total", endpoint="/v1/search/batch", mode="hybrid") == 1
    assert moved("searcher_responses_total", endpoint="/v1/search", status="200") == 2
    assert moved("searcher_responses_total", endpoint="/v1/search", status="404") == 1
    assert moved("searcher_responses_total", endpoint="/v1/search", status="422") == 1
    assert moved("searcher_responses_total", endpoint="unmatched", status="404") == 1
    # Texts per forward pass: the dense single, then the batch's three (keyword searches use no model).
    assert moved("searcher_embed_batch_texts_count", index="faq") == 2
    assert moved("searcher_embed_batch_texts_sum", index="faq") == 4


def test_the_document_count_follows_writes(client):
    documents = [{"id": "vpn", "text": "How do I connect to the VPN?"}, {"id": "wifi", "text": "Wi-Fi password"}]
    assert client.put("/v1/indexes/faq/documents", json={"documents": documents}).status_code == 200
    assert value(scrape(client), "searcher_index_documents", index="faq") == len(DOCS) + 2
    assert client.request("DELETE", "/v1/indexes/faq/documents", json={"ids": ["vpn"]}).status_code == 200
    samples = scrape(client)
    assert value(samples, "searcher_index_documents", index="faq") == len(DOCS) + 1
    labels = {"endpoint": "/v1/indexes/{name}/documents", "mode": "none"}
    assert value(samples, "searcher_requests_total", **labels) == 2


def test_apps_in_one_process_count_apart(home, client):
    with TestClient(create_app(ServerConfig(("faq",), str(home)))) as other:
        wait_ready(other)
        client.post("/v1/search", json={"index": "faq", "query": "password"})
        assert value(scrape(other), "searcher_requests_total", endpoint="/v1/search", mode="dense") == 0


def test_metrics_need_the_api_key_unless_public(home, monkeypatch):
    monkeypatch.setenv("SUPPORT_KEY", "s3cret-key")
    with TestClient(create_app(ServerConfig(("faq",), str(home), api_key_env="SUPPORT_KEY"))) as client:
        wait_ready(client)
        response = client.get("/metrics")
        assert response.status_code == 401 and "API key" in response.json()["error"]
        samples = scrape(client, Authorization="Bearer s3cret-key")
        # Refused requests are counted too, under the endpoint they were for.
        assert value(samples, "searcher_responses_total", endpoint="/metrics", status="401") == 1
    config = ServerConfig(("faq",), str(home), api_key_env="SUPPORT_KEY", metrics_public=True)
    with TestClient(create_app(config)) as client:
        wait_ready(client)
        assert client.get("/metrics").status_code == 200
        assert client.get("/v1/indexes").status_code == 401  # only /metrics is opened


def test_serve_takes_metrics_public(home, monkeypatch):
    served = []
    monkeypatch.setattr(searcher.server, "run", lambda config, *args: served.append(config))
    result = CliRunner().invoke(cli_app, ["serve", "--index", "faq", "--home", str(home), "--metrics-public"])
    assert result.exit_code == 0, result.output
    assert served[0].metrics_public
