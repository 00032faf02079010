"""What the pages for agents and the help centre need from the server: the pages served without a key, the
fields and document endpoints, the public key's limits (search only, chosen indexes, a rate per address) and
CORS preflights that let a page send the key."""

from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from test_server import wait_ready

from searcher import Record
from searcher.errors import ConfigError
from searcher.ratelimit import RateLimiter
from searcher.server import PAGES, ServerConfig, create_app

API_KEY = {"Authorization": "Bearer full-key"}
PUBLIC_KEY = {"Authorization": "Bearer public-key"}
ALLOWED_ORIGIN = "https://help.example.com"
DOCS = [
    Record(
        "pw",
        "How do I reset my password? Use the link on the sign-in screen.",
        {"category": "account", "paid": False, "tier": 1, "tags": ["login"]},
        ("forgot my password",),
        "How do I reset my password?",
    ),
    Record("bill", "Where are my invoices?", {"category": "billing", "paid": True, "tier": 2, "tags": []}),
    Record("dark", "Does the app have a dark mode?", {"category": "app", "paid": False, "tier": 1}),
]


@pytest.fixture
def config(tiny_index, monkeypatch) -> ServerConfig:
    for name, records in (("faq", DOCS), ("internal", DOCS[:1])):
        index = tiny_index(records, name)
        index.close()
    monkeypatch.setenv("FULL_KEY", "full-key")
    monkeypatch.setenv("PUBLIC_KEY", "public-key")
    return ServerConfig(
        ("faq", "internal"),
        str(index.path.parent),
        api_key_env="FULL_KEY",
        cors_origins=(ALLOWED_ORIGIN,),
        public_key_env="PUBLIC_KEY",
        public_indexes=("faq",),
        public_rate=3,
    )


@pytest.fixture
def client(config):
    with TestClient(create_app(config)) as test_client:
        wait_ready(test_client)
        yield test_client


def search(client, headers, index="faq"):
    return client.post("/v1/search", json={"index": index, "query": "password", "k": 2}, headers=headers)


def test_pages_and_assets_are_served_without_the_key(client):
    for path in [*PAGES, "/assets/app.js", "/assets/style.css", "/assets/common.js"]:
        response = client.get(path)
        assert response.status_code == 200, path
    assert "text/html" in client.get("/").headers["content-type"]
    assert "default-src 'self'" in client.get("/inbox").headers["content-security-policy"]
    assert "javascript" in client.get("/widget.js").headers["content-type"]
    assert client.get("/v1/indexes").status_code == 401  # the data still needs the key
    assert client.get("/assets/../v1/indexes").status_code in (401, 404)


def test_fields_lists_each_scalar_fields_values(client):
    response = client.get("/v1/indexes/faq/fields", headers=API_KEY)
    assert response.status_code == 200
    # tags holds lists: no choice for a filter; booleans and numbers keep their JSON types
    assert response.json() == {
        "fields": {"category": ["account", "app", "billing"], "paid": [False, True], "tier": [1, 2]}
    }


def test_fields_leaves_out_fields_with_too_many_values(tiny_index):
    records = [Record(str(number), f"entry {number}", {"serial": number, "kind": "a"}) for number in range(51)]
    index = tiny_index(records, "many")
    assert index.field_values() == {"kind": ["a"]}
    assert index.field_values(limit=60)["serial"] == list(range(51))


def test_a_document_read_back_and_written_again_is_unchanged(client):
    document = client.get("/v1/indexes/faq/documents/pw", headers=API_KEY).json()
    assert document == {
        "id": "pw",
        "title": "How do I reset my password?",
        "text": "Use the link on the sign-in screen.",
        "fields": DOCS[0].fields,
        "phrasings": ["forgot my password"],
    }
    report = client.put("/v1/indexes/faq/documents", json={"documents": [document]}, headers=API_KEY).json()
    assert report["unchanged"] == 1
    document["phrasings"].append("lost my login")
    report = client.put("/v1/indexes/faq/documents", json={"documents": [document]}, headers=API_KEY).json()
    assert report["updated"] == 1
    assert client.get("/v1/indexes/faq/documents/pw", headers=API_KEY).json()["phrasings"] == [
        "forgot my password",
        "lost my login",
    ]
    missing = client.get("/v1/indexes/faq/documents/nope", headers=API_KEY)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_the_public_key_only_searches(client):
    assert search(client, PUBLIC_KEY).status_code == 200
    batch = {"index": "faq", "queries": ["password", "invoice"], "k": 1}
    assert client.post("/v1/search/batch", json=batch, headers=PUBLIC_KEY).status_code == 200
    upsert = {"documents": [{"id": "x", "text": "spam"}]}
    feedback = {"index": "faq", "query": "q", "id": "pw", "helpful": True}
    refused = [
        client.put("/v1/indexes/faq/documents", json=upsert, headers=PUBLIC_KEY),
        client.request("DELETE", "/v1/indexes/faq/documents", json={"ids": ["pw"]}, headers=PUBLIC_KEY),
        client.post("/v1/feedback", json=feedback, headers=PUBLIC_KEY),
        client.get("/v1/indexes", headers=PUBLIC_KEY),
        client.get("/v1/indexes/faq/inbox", headers=PUBLIC_KEY),
    ]
    assert [response.status_code for response in refused] == [403] * len(refused)
    assert "only search" in refused[0].json()["error"]
    assert client.get("/v1/indexes/faq/documents/x", headers=API_KEY).status_code == 404


def test_the_public_key_searches_only_its_indexes(client):
    refused = search(client, PUBLIC_KEY, index="internal")
    assert refused.status_code == 403 and "internal" in refused.json()["error"]
    assert search(client, API_KEY, index="internal").status_code == 200


def test_the_public_key_is_rate_limited_per_address(client):
    answers = [search(client, PUBLIC_KEY).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    limited = search(client, PUBLIC_KEY)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "too many searches" in limited.json()["error"]
    assert search(client, API_KEY).status_code == 200  # the full key is not limited


def test_rate_limiter_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    assert [limiter.retry_after("a") for _ in range(60)] == [0] * 60
    assert limiter.retry_after("a") == 1
    assert limiter.retry_after("b") == 0  # another address has its own bucket
    now[0] += 1.0
    assert limiter.retry_after("a") == 0


def test_cors_preflight_lets_allowed_origins_send_the_key(client):
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    allowed = client.options("/v1/search", headers={"Origin": ALLOWED_ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = client.options("/v1/search", headers={"Origin": "https://evil.example", **preflight})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    answer = search(client, {**PUBLIC_KEY, "Origin": ALLOWED_ORIGIN})
    assert answer.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


def test_public_key_settings_are_checked_and_carried_to_workers(config, monkeypatch):
    monkeypatch.setenv("SEARCHER_SERVE_CONFIG", config.to_environment())
    assert ServerConfig.from_environment() == config
    with pytest.raises(ConfigError, match="--api-key-env"):
        replace(config, api_key_env=None).check()
    with pytest.raises(ConfigError, match="not served"):
        replace(config, public_indexes=("elsewhere",)).check()
    monkeypatch.setenv("PUBLIC_KEY", "full-key")
    with pytest.raises(ConfigError, match="differ"):
        config.check()
    assert replace(config, public_indexes=()).searchable == {"faq", "internal"}
