"""The HTTP server under hostile or unlucky conditions: numbers JSON cannot carry, a writer lock held elsewhere,
filters SQLite cannot take, paths that must not leak, requests that take too long, wordings past the caps."""

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from test_server import DOCS, free_port, wait_ready
from typer.testing import CliRunner

from searcher import EmbeddingSettings, Index
from searcher.cli import app as cli_app
from searcher.paths import writer_lock
from searcher.search import MAX_FILTER_CHOICES, MAX_FILTER_FIELDS
from searcher.server import (
    MAX_BATCH_CHARS,
    MAX_WRITE_PHRASINGS,
    UVICORN_OPTIONS,
    RequestDeadline,
    ServerConfig,
    create_app,
)
from searcher.writes import MAX_PHRASINGS

runner = CliRunner()


@pytest.fixture
def home(tiny_index):
    index = tiny_index(DOCS, "faq")
    index.close()
    return index.path.parent


@contextmanager
def serving(home, raise_server_exceptions=True):
    api = create_app(ServerConfig(("faq",), str(home)))
    with TestClient(api, raise_server_exceptions=raise_server_exceptions) as client:
        wait_ready(client)
        yield client


@pytest.fixture
def client(home):
    with serving(home) as test_client:
        yield test_client


@asynccontextmanager
async def async_client(api):
    """A client whose requests can overlap, over API's lifespan, once its indexes are ready."""
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://t") as client,
    ):
        while (await client.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.05)
        yield client


def put_raw(client, body: str):
    return client.put("/v1/indexes/faq/documents", content=body, headers={"Content-Type": "application/json"})


def search_raw(client, body: str):
    return client.post("/v1/search", content=body, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ('{"price": NaN}', "price"),
        ('{"lang": "en", "size": Infinity}', "size"),
        ('{"dims": [1, -Infinity]}', "dims"),
        ('{"note": "half \\ud800 a pair"}', "note"),
        ('{"\\udfff": 1}', "\udfff"),
    ],
)
def test_row2_a_field_json_cannot_carry_is_refused_at_the_door(client, fields, field):
    body = f'{{"documents": [{{"id": "ok", "text": "fine"}}, {{"id": "bad", "text": "t", "fields": {fields}}}]}}'
    response = put_raw(client, body)
    assert response.status_code == 400, response.text
    assert "'bad'" in response.json()["error"] and repr(field) in response.json()["error"]
    assert client.get("/v1/indexes/faq").json()["documents"] == len(DOCS)  # nothing of the request stored
    filtered = client.post("/v1/search", json={"index": "faq", "query": "app", "filter": {"product": "app"}})
    assert filtered.status_code == 200


@pytest.mark.parametrize("document", ['{"text": "t\\ud800"}', '{"text": "t", "phrasings": ["ok", "\\udc00"]}'])
def test_row2_a_text_that_is_not_text_is_refused_at_the_door(client, document):
    response = put_raw(client, f'{{"documents": [{{"id": "bad", {document[1:]}]}}')
    assert response.status_code == 400, response.text
    assert "document 'bad'" in response.json()["error"] and "lone surrogate" in response.json()["error"]


def test_row2_a_score_floor_or_filter_of_nan_is_refused(client):
    response = search_raw(client, '{"index": "faq", "query": "app", "min_score": NaN}')
    assert response.status_code == 422 and "min_score" in response.json()["error"]
    response = search_raw(client, '{"index": "faq", "query": "app", "filter": {"product": Infinity}}')
    assert response.status_code == 400 and "finite" in response.json()["error"]


def test_row2_a_stored_number_json_cannot_carry_is_answered_as_valid_json(home):
    # As an index written before the door was shut holds it: such a field reads as null (`check` reports it).
    with sqlite3.connect(home / "faq" / "docs.sqlite") as db:
        db.execute("""UPDATE documents SET fields = '{"weight": NaN}' WHERE id = 'pw'""")
    with serving(home, raise_server_exceptions=False) as client:
        response = client.post("/v1/search", json={"index": "faq", "query": DOCS[0].text, "k": 4})
    assert response.status_code == 200, response.text
    strict = json.loads(response.text, parse_constant=lambda name: pytest.fail(f"{name} in a response"))
    assert next(hit for hit in strict["results"] if hit["id"] == "pw")["fields"] == {"weight": None}


def test_row4_a_write_gives_up_with_409_while_another_process_writes_and_searches_go_on(home):
    api = create_app(ServerConfig(("faq",), str(home), lock_timeout=2.0))

    async def scenario():
        async with async_client(api) as client:
            with writer_lock(home / "faq"):  # as another process writing holds it
                started = time.monotonic()
                upsert = asyncio.create_task(
                    client.put("/v1/indexes/faq/documents", json={"documents": [{"id": "new", "text": "brand new"}]})
                )
                search = await asyncio.wait_for(client.post("/v1/search", json={"index": "faq", "query": "app"}), 10)
                assert search.status_code == 200 and not upsert.done()
                response = await asyncio.wait_for(upsert, 15)
            assert response.status_code == 409, response.text
            assert "being written by another process; gave up after 2.0 s" in response.json()["error"]
            assert 2.0 <= time.monotonic() - started < 12
            retry = await client.put("/v1/indexes/faq/documents", json={"documents": [{"id": "new", "text": "new"}]})
            assert retry.status_code == 200

    asyncio.run(scenario())


def test_row4_the_lock_timeout_defaults_to_a_few_seconds():
    assert 0 < ServerConfig(("faq",)).lock_timeout <= 10


@pytest.mark.slow
def test_row4_every_worker_of_serve_gives_up_after_its_lock_timeout(home):
    port = free_port()
    serve = ["serve", "--index", "faq", "--home", str(home), "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "searcher", *serve, "--lock-timeout", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    upsert = {"documents": [{"id": "new", "text": "brand new"}]}
    try:
        with writer_lock(home / "faq"), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 120
            refused = 0
            while refused < 6 and time.monotonic() < deadline:  # several answers, most likely from both workers
                try:
                    response = http.put("/v1/indexes/faq/documents", json=upsert)
                except httpx.TransportError:  # not listening yet
                    assert process.poll() is None, process.stdout.read() if process.stdout else ""
                    time.sleep(0.2)
                    continue
                if response.status_code == 503:  # a worker still loading
                    time.sleep(0.2)
                    continue
                assert response.status_code == 409, response.text
                assert "gave up after 0.5 s" in response.json()["error"]
                refused += 1
            assert refused == 6
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output, output


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"n": 10**30}, "64-bit"),
        ({"n": {"in": [1, -(10**19)]}}, "64-bit"),
        ({f"f{i}": 1 for i in range(MAX_FILTER_FIELDS + 1)}, f"at most {MAX_FILTER_FIELDS} fields"),
        ({f"f{i}": 1 for i in range(1001)}, f"at most {MAX_FILTER_FIELDS} fields"),
        ({"a": {"in": list(range(600))}, "b": {"in": list(range(600))}}, f"at most {MAX_FILTER_CHOICES:,} values"),
        ({f"f{i}": {"in": list(range(1000))} for i in range(300)}, f"at most {MAX_FILTER_FIELDS} fields"),
        ({"pro\x00duct": "app"}, "invalid filter field name"),
        ({"\ud800": "app"}, "invalid filter field name"),
        ({"product": "a\udfffb"}, "lone surrogate"),
        ({"product": {"in": ["app", 1e400]}}, "finite"),
    ],
)
def test_row7_a_filter_sqlite_cannot_take_is_refused_with_400(client, filters, message):
    # Sent as Python writes JSON: lone surrogates as \u escapes, 1e400 as Infinity.
    response = search_raw(client, json.dumps({"index": "faq", "query": "app", "mode": "hybrid", "filter": filters}))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error and len(error) < 300


def test_row7_the_query_command_refuses_such_a_filter_in_one_line(home):
    result = runner.invoke(
        cli_app, ["query", "app", "--index", "faq", "--home", str(home), "--filter", '{"n": 1000000000000000000000000}']
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: filter on 'n'") and result.stderr.count("\n") == 1


def test_row10_a_failed_load_names_the_index_not_its_files(tmp_path, tiny_model_copy):
    from searcher.embedder import Embedder

    embedder = Embedder(EmbeddingSettings(str(tiny_model_copy), precision="fp32"), "cpu")
    with Index.create(tmp_path / "faq", embedder=embedder) as index:
        index.add(DOCS)
    for weights in tiny_model_copy.glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # another model now: its fingerprint differs
    with TestClient(create_app(ServerConfig(("faq",), str(tmp_path)))) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = client.get("/readyz")
        search = client.post("/v1/search", json={"index": "faq", "query": "password"})
    assert ready.status_code == 503 and ready.json()["status"] == "failed"
    assert "index 'faq'" in ready.json()["error"] and "ModelMismatchError" in ready.json()["error"]
    assert search.status_code == 503
    for response in (ready, search):
        assert str(tmp_path) not in response.text and "tiny-bert" not in response.text
        assert "sha256" not in response.text and "fingerprint" not in response.text


def test_row10_no_response_shows_where_the_server_keeps_its_files(client, home, tiny_model):
    details = client.get("/v1/indexes/faq")
    assert details.status_code == 200 and "path" not in details.json()
    assert details.json()["manifest"]["model"] == tiny_model.name  # a local model by its directory's name only
    for response in (details, client.get("/v1/indexes"), client.get("/readyz")):
        assert str(home) not in response.text and str(tiny_model.parent) not in response.text


def test_row10_a_404_names_only_the_index_asked_for(client):
    response = client.post("/v1/search", json={"index": "secret-plans", "query": "x"})
    assert response.status_code == 404
    assert response.json() == {"error": "index 'secret-plans' is not served here"}
    assert "faq" not in client.get("/v1/indexes/other").text


def test_row13_a_batch_over_the_character_budget_is_refused(client):
    queries = ["how do I reset my password " * 15] * 64  # 405 characters each
    assert sum(map(len, queries)) > MAX_BATCH_CHARS
    response = client.post("/v1/search/batch", json={"index": "faq", "queries": queries, "mode": "hybrid"})
    assert response.status_code == 422, response.text
    assert f"at most {MAX_BATCH_CHARS:,} characters" in response.json()["error"]
    fitting = queries[: MAX_BATCH_CHARS // len(queries[0])]
    assert client.post("/v1/search/batch", json={"index": "faq", "queries": fitting}).status_code == 200


def test_row13_a_request_that_waits_too_long_for_the_reader_gets_503(home):
    api = create_app(ServerConfig(("faq",), str(home), queue_timeout=0.5, readers=1))  # one reader to keep busy
    release = threading.Event()

    async def scenario():
        async with async_client(api) as client:
            busy = asyncio.create_task(api.state.indexes.get("faq").read(lambda _: release.wait(30)))
            try:
                started = time.monotonic()
                # A keyword search always goes to a reader (a lone dense one may be answered by the model's thread).
                keyword = {"index": "faq", "query": "x", "mode": "keyword"}
                response = await asyncio.wait_for(client.post("/v1/search", json=keyword), 10)
                assert response.status_code == 503, response.text
                assert "busy" in response.json()["error"] and time.monotonic() - started < 5
            finally:
                release.set()
            await busy
            assert (await client.post("/v1/search", json={"index": "faq", "query": "x"})).status_code == 200

    asyncio.run(scenario())


class QuickDeadline(RequestDeadline):
    seconds = 0.5


@contextmanager
def real_server(home):
    """The app behind uvicorn with `searcher serve`'s options, in a thread, on a free loopback port."""
    port = free_port()
    options = UVICORN_OPTIONS | {"http": QuickDeadline}
    server = uvicorn.Server(uvicorn.Config(create_app(ServerConfig(("faq",), str(home))), port=port, **options))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(60)


def dropped(connection: socket.socket, drip: bytes, seconds: float = 5) -> bool:
    """Whether the server closes CONNECTION, unanswered, within SECONDS while the client sends DRIP, a byte
    every 0.2 s."""
    connection.settimeout(0.2)
    deadline = time.monotonic() + seconds
    for byte in drip:
        if time.monotonic() > deadline:
            return False
        try:
            connection.send(bytes([byte]))
            answer = connection.recv(4096)
        except TimeoutError:
            continue
        except OSError:  # reset, or a broken pipe
            return True
        return answer == b""
    return False


def test_row13_a_request_that_arrives_too_slowly_is_dropped(home):
    with real_server(home) as port:
        with socket.create_connection(("127.0.0.1", port)) as headers_dripping:
            headers_dripping.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            assert dropped(headers_dripping, b"a" * 100)
        with socket.create_connection(("127.0.0.1", port)) as body_dripping:
            body = json.dumps({"index": "faq", "query": "password", "mode": "dense", "k": 3}).encode()
            head = (
                f"POST /v1/search HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            )
            body_dripping.sendall(head.encode() + b"\r\n\r\n" + body[:5])
            assert dropped(body_dripping, body[5:])
        # A request sent at once is answered, and so is a later one.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            assert http.post("/v1/search", json={"index": "faq", "query": "password"}).status_code == 200
            time.sleep(1)
            assert http.get("/healthz").status_code == 200


def test_row13_serving_beyond_loopback_without_a_key_is_refused(home):
    with socket.socket() as taken:  # were the server to start, it would find its port taken and stop
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        serve = ["serve", "--index", "faq", "--home", str(home), "--host", "0.0.0.0", "--port", port]
        result = runner.invoke(cli_app, serve)
        assert result.exit_code == 2, result.output
        assert "without an API key" in result.stderr and "--insecure" in result.stderr
        result = runner.invoke(cli_app, [*serve, "--insecure"])
        assert "Warning: anyone who can reach 0.0.0.0" in result.stderr


def test_row1_a_document_with_too_many_wordings_is_refused(client):
    phrasings = [f"w{i}" for i in range(MAX_PHRASINGS + 1)]
    documents = [{"id": "fine", "text": "t"}, {"id": "wordy", "text": "t", "phrasings": phrasings}]
    response = client.put("/v1/indexes/faq/documents", json={"documents": documents})
    assert response.status_code == 400, response.text
    assert "'wordy'" in response.json()["error"] and f"at most {MAX_PHRASINGS:,}" in response.json()["error"]
    assert client.get("/v1/indexes/faq").json()["documents"] == len(DOCS)


def test_row1_a_write_with_too_many_wordings_in_all_is_refused(client):
    each = MAX_PHRASINGS
    documents = [
        {"id": f"d{n}", "text": "t", "phrasings": [f"w{i}" for i in range(each)]}
        for n in range(MAX_WRITE_PHRASINGS // each + 1)
    ]
    response = client.put("/v1/indexes/faq/documents", json={"documents": documents})
    assert response.status_code == 400, response.text
    crossing = f"'d{MAX_WRITE_PHRASINGS // each}'"
    assert crossing in response.json()["error"] and f"{MAX_WRITE_PHRASINGS:,}" in response.json()["error"]
    assert client.get("/v1/indexes/faq").json()["documents"] == len(DOCS)
