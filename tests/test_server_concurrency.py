"""Concurrent searches: queries embedded together (micro-batching), readers side by side, bounded queues, the
time budget, and keyword searches that never wait for the model."""

import asyncio
import gc
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from test_reliability_server import async_client
from test_server import DOCS, free_port, wait_ready
from typer.testing import CliRunner

import searcher.server
from searcher import Index
from searcher.batching import QueryBatcher
from searcher.cli import app as cli_app
from searcher.errors import ConfigError, ServerBusyError
from searcher.server import UVICORN_OPTIONS, IndexThreads, ServerConfig, create_app

QUERIES = ["reset my password", "where are the invoices", "dark mode please", "markdown export", "app", "billing"]


@pytest.fixture
def home(tiny_index):
    index = tiny_index(DOCS, "faq")
    index.close()
    return index.path.parent


class Model:
    """`Index.embed_queries` as the server calls it, recording how many texts each forward pass held; after
    `hold()`, the next pass waits until `release` is set."""

    def __init__(self, monkeypatch):
        self.sizes: list[int] = []
        self.busy = threading.Event()  # the held pass has begun
        self.release = threading.Event()
        self._hold = False
        original = Index.embed_queries

        def embed(index, texts):
            self.sizes.append(len(texts))
            if self._hold:
                self._hold = False
                self.busy.set()
                self.release.wait(30)
            return original(index, texts)

        monkeypatch.setattr(Index, "embed_queries", embed)

    def hold(self):
        self.busy.clear()
        self.release.clear()
        self._hold = True


@pytest.fixture
def model(monkeypatch):
    return Model(monkeypatch)


def occupy_a_reader(api):
    """A task keeping one of the index's readers busy until the event returned is set, once it has begun."""
    begun, release = threading.Event(), threading.Event()

    def hold(_):
        begun.set()
        release.wait(30)

    return asyncio.create_task(api.state.indexes.get("faq").read(hold)), begun, release


async def until(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.005)


def search(client, query, mode="dense", k=3):
    return client.post("/v1/search", json={"index": "faq", "query": query, "k": 3, "mode": mode})


def same_answers(answers, singles):
    """Concurrent answers are those of queries sent alone: the same hits, scores up to padding's rounding."""
    assert len(answers) == len(singles)
    for answer, single in zip(answers, singles, strict=True):
        assert [hit["id"] for hit in answer["results"]] == [hit["id"] for hit in single["results"]]
        assert [hit["score"] for hit in answer["results"]] == pytest.approx(
            [hit["score"] for hit in single["results"]], abs=1e-5
        )
        assert {key: value for key, value in answer.items() if key != "results"} == {
            key: value for key, value in single.items() if key != "results"
        }


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_concurrent_searches_share_one_forward_pass_and_answer_as_alone(home, model, mode):
    api = create_app(ServerConfig(("faq",), str(home)))

    async def scenario():
        async with async_client(api) as client:
            batcher = api.state.indexes.get("faq").batcher
            model.hold()
            first = asyncio.create_task(search(client, "how do I log in", mode))
            await until(model.busy.is_set)
            model.sizes.clear()
            # While the model is busy, singles and a batch request queue up: all go through the next pass.
            waiting = [asyncio.create_task(search(client, query, mode)) for query in QUERIES[:4]]
            batch = asyncio.create_task(
                client.post("/v1/search/batch", json={"index": "faq", "queries": QUERIES[4:], "k": 3, "mode": mode})
            )
            await until(lambda: batcher.waiting_texts == len(QUERIES))
            model.release.set()
            answers = [(await task).json() for task in waiting] + (await batch).json()["results"]
            assert (await first).status_code == 200
            assert model.sizes == [len(QUERIES)]
            model.sizes.clear()
            singles = [(await search(client, query, mode)).json() for query in QUERIES]
            assert model.sizes == [1] * len(QUERIES)  # one request at a time: each embedded alone
            same_answers(answers, singles)

    asyncio.run(scenario())


def test_a_lone_request_is_embedded_at_once(home, model, monkeypatch):
    monkeypatch.setattr(QueryBatcher, "gather_s", 5.0)  # were a lone request to wait for company, it would show
    api = create_app(ServerConfig(("faq",), str(home)))

    async def scenario():
        async with async_client(api) as client:
            model.sizes.clear()
            started = time.monotonic()
            assert (await search(client, "password")).status_code == 200
            batch = await client.post("/v1/search/batch", json={"index": "faq", "queries": QUERIES[:3]})
            assert batch.status_code == 200
            assert time.monotonic() - started < 4  # not the 5 s a wait for company would take
            assert model.sizes == [1, 3]

    asyncio.run(scenario())


def test_keyword_searches_are_answered_while_the_model_is_busy(home, model):
    api = create_app(ServerConfig(("faq",), str(home)))

    async def scenario():
        async with async_client(api) as client:
            model.hold()
            dense = asyncio.create_task(search(client, "password"))
            await until(model.busy.is_set)
            keyword = await asyncio.wait_for(search(client, "password", "keyword"), 5)
            assert keyword.status_code == 200 and keyword.json()["results"][0]["id"] == "pw"
            assert not dense.done(), "the dense search finished first: nothing was tested"
            model.release.set()
            assert (await dense).status_code == 200

    asyncio.run(scenario())


def test_a_full_model_queue_is_answered_503_at_once_with_retry_after(home, model, monkeypatch):
    monkeypatch.setattr(QueryBatcher, "max_waiting_texts", 2)
    api = create_app(ServerConfig(("faq",), str(home)))

    async def scenario():
        async with async_client(api) as client:
            batcher = api.state.indexes.get("faq").batcher
            model.hold()
            held = asyncio.create_task(search(client, "password"))
            await until(model.busy.is_set)
            waiting = [asyncio.create_task(search(client, query)) for query in QUERIES[:2]]
            await until(lambda: batcher.waiting_texts == 2)
            started = time.monotonic()
            refused = await search(client, "one too many", "hybrid")
            assert refused.status_code == 503 and time.monotonic() - started < 5
            assert refused.headers["retry-after"] == "1"
            assert "busy" in refused.json()["error"] and "wait for its model" in refused.json()["error"]
            keyword = await search(client, "one too many", "keyword")  # never queued for the model
            assert keyword.status_code == 200
            model.release.set()
            assert [(await task).status_code for task in [held, *waiting]] == [200, 200, 200]
            assert (await search(client, "password")).status_code == 200

    asyncio.run(scenario())


def test_too_many_requests_waiting_for_readers_are_answered_503_at_once(home, monkeypatch):
    monkeypatch.setattr(IndexThreads, "max_waiting_per_thread", 1)
    api = create_app(ServerConfig(("faq",), str(home), readers=1))

    async def scenario():
        async with async_client(api) as client:
            readers = api.state.indexes.get("faq").readers
            busy, begun, release = occupy_a_reader(api)
            await until(begun.is_set)
            queued = asyncio.create_task(search(client, "password", "keyword"))
            await until(lambda: readers.waiting == 1)
            started = time.monotonic()
            refused = await search(client, "password", "keyword")
            assert refused.status_code == 503 and time.monotonic() - started < 5
            assert refused.headers["retry-after"] == "1" and "busy" in refused.json()["error"]
            release.set()
            await busy
            assert (await queued).status_code == 200

    asyncio.run(scenario())


def test_a_search_over_its_time_budget_is_answered_503(home, model, monkeypatch):
    monkeypatch.setattr(searcher.server, "REQUEST_BUDGET_S", 0.5)
    api = create_app(ServerConfig(("faq",), str(home)))

    async def scenario():
        async with async_client(api) as client:
            model.hold()
            started = time.monotonic()
            response = await asyncio.wait_for(search(client, "password"), 10)
            assert response.status_code == 503 and 0.5 <= time.monotonic() - started < 5
            assert response.headers["retry-after"] == "1"
            assert "not answered within 0.5 s" in response.json()["error"]
            model.release.set()
            assert (await search(client, "password")).status_code == 200

    asyncio.run(scenario())


def test_the_waiting_for_a_reader_also_counts_against_the_budget(home, monkeypatch):
    monkeypatch.setattr(searcher.server, "REQUEST_BUDGET_S", 0.5)
    api = create_app(ServerConfig(("faq",), str(home), readers=1))  # the queue timeout stays 10 s

    async def scenario():
        async with async_client(api) as client:
            busy, begun, release = occupy_a_reader(api)
            await until(begun.is_set)
            try:
                started = time.monotonic()
                response = await asyncio.wait_for(search(client, "password", "keyword"), 10)
                assert response.status_code == 503 and time.monotonic() - started < 5
                assert response.headers["retry-after"] == "1" and "busy" in response.json()["error"]
            finally:
                release.set()
            with pytest.raises(ServerBusyError):  # it began, but ran past its budget
                await busy

    asyncio.run(scenario())


def test_readers_answer_side_by_side(home):
    api = create_app(ServerConfig(("faq",), str(home), readers=2))

    async def scenario():
        async with async_client(api) as client:
            busy, begun, release = occupy_a_reader(api)
            await until(begun.is_set)
            try:
                response = await asyncio.wait_for(search(client, "password"), 5)  # the other reader takes it
                assert response.status_code == 200 and not busy.done()
            finally:
                release.set()
            await busy

    asyncio.run(scenario())


def test_concurrent_clients_over_http_get_the_answers_of_single_queries(home):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ServerConfig(("faq",), str(home))), port=port, **UVICORN_OPTIONS))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "never ready"
                time.sleep(0.05)
            asked = [(query, mode) for mode in ("dense", "hybrid") for query in QUERIES]
            singles = [search(http, query, mode).json() for query, mode in asked]
            with ThreadPoolExecutor(8) as clients:
                answers = list(clients.map(lambda pair: search(http, *pair).json(), asked * 3))
            same_answers(answers, singles * 3)
    finally:
        server.should_exit = True
        thread.join(60)


def test_serve_takes_the_number_of_readers(home, monkeypatch):
    served = []
    monkeypatch.setattr(searcher.server, "run", lambda config, *args: served.append(config))
    result = CliRunner().invoke(cli_app, ["serve", "--index", "faq", "--home", str(home), "--readers", "2"])
    assert result.exit_code == 0, result.output
    assert served[0].readers == 2 and not served[0].metrics_public
    result = CliRunner().invoke(cli_app, ["serve", "--index", "faq", "--home", str(home), "--readers", "0"])
    assert result.exit_code == 2
    with pytest.raises(ConfigError, match="at least one reader"):
        create_app(ServerConfig(("faq",), str(home), readers=0))


# The batcher alone, over a model that adds up each text's characters.


def characters(texts):
    return np.array([[len(text), 1.0] for text in texts], dtype=np.float32)


class HeldModel:
    """A model whose first pass waits for `release`; records each pass's texts."""

    def __init__(self, embed=characters):
        self.passes: list[list[str]] = []
        self.busy, self.release = threading.Event(), threading.Event()
        self._embed = embed

    def __call__(self, texts):
        self.passes.append(texts)
        if len(self.passes) == 1:
            self.busy.set()
            self.release.wait(30)
        return self._embed(texts)


def queue_behind_a_held_pass(model, batcher, requests):
    first = batcher.submit(["first"])
    assert model.busy.wait(10)
    futures = [batcher.submit(texts) for texts in requests]
    model.release.set()
    assert first.result(10)[0, 0] == len("first")
    return futures


def test_a_batch_holds_at_most_its_cap_of_texts_and_each_request_gets_its_rows():
    model = HeldModel()
    batcher = QueryBatcher("t", model)
    try:
        requests = [[f"q{n}-{i}" * (n + 1) for i in range(10)] for n in range(7)]  # 70 texts, 10 per request
        futures = queue_behind_a_held_pass(model, batcher, requests)
        for texts, future in zip(requests, futures, strict=True):
            assert future.result(10)[:, 0].tolist() == [len(text) for text in texts]
        assert [len(texts) for texts in model.passes] == [1, 60, 10]
    finally:
        batcher.close()


def test_a_request_larger_than_the_cap_goes_whole_and_alone(monkeypatch):
    monkeypatch.setattr(QueryBatcher, "max_batch_texts", 4)
    model = HeldModel()
    batcher = QueryBatcher("t", model)
    try:
        futures = queue_behind_a_held_pass(model, batcher, [["a"] * 6, ["b"], ["c"]])
        assert [len(future.result(10)) for future in futures] == [6, 1, 1]
        assert [len(texts) for texts in model.passes] == [1, 6, 2]
    finally:
        batcher.close()


def test_a_failing_request_fails_alone_and_cancelled_ones_are_skipped():
    def picky(texts):
        if "poison" in texts:
            raise ValueError("cannot embed poison")
        return characters(texts)

    model = HeldModel(picky)
    batcher = QueryBatcher("t", model)
    try:
        first = batcher.submit(["first"])
        assert model.busy.wait(10)
        good, poisoned, dropped, later = (batcher.submit(texts) for texts in (["ok"], ["poison"], ["gone"], ["fine"]))
        assert dropped.cancel()
        model.release.set()
        assert first.result(10).shape == (1, 2) and good.result(10)[0, 0] == 2 and later.result(10)[0, 0] == 4
        with pytest.raises(ValueError, match="poison"):
            poisoned.result(10)
        assert all("gone" not in texts for texts in model.passes)
    finally:
        batcher.close()


def test_closing_embeds_what_was_submitted_then_refuses():
    model = HeldModel()
    batcher = QueryBatcher("t", model)
    futures = queue_behind_a_held_pass(model, batcher, [["a"], ["b"]])
    batcher.close()
    assert all(future.done() for future in futures)
    with pytest.raises(ServerBusyError, match="shutting down"):
        batcher.submit(["late"])


def test_other_work_runs_on_the_batchers_thread_in_its_turn_and_alone():
    model = HeldModel()
    batcher = QueryBatcher("t", model)
    try:
        assert batcher.idle
        first = batcher.submit(["first"])
        assert model.busy.wait(10)
        assert not batcher.idle
        before = batcher.submit(["before"])
        work = batcher.run(lambda: (threading.current_thread().name, [len(texts) for texts in model.passes]))
        after = [batcher.submit(["after one"]), batcher.submit(["after two"])]
        model.release.set()
        first.result(10), before.result(10)
        assert work.result(10) == ("embed-t", [1, 1])  # the pass queued before it ran first
        assert [future.result(10)[0, 0] for future in after] == [len("after one"), len("after two")]
        assert [len(texts) for texts in model.passes] == [1, 1, 2]  # never in one pass with the work
    finally:
        batcher.close()


def test_a_lone_dense_search_is_answered_on_the_models_thread_while_the_readers_are_busy(home):
    api = create_app(ServerConfig(("faq",), str(home), queue_timeout=0.5, readers=1))
    release = threading.Event()

    async def scenario():
        async with async_client(api) as client:
            busy = asyncio.create_task(api.state.indexes.get("faq").read(lambda _: release.wait(30)))
            try:
                dense = await client.post("/v1/search", json={"index": "faq", "query": "reset my password", "k": 1})
                assert dense.status_code == 200 and dense.json()["results"][0]["id"] == "pw"
            finally:
                release.set()
            await busy

    asyncio.run(scenario())


def test_connections_on_a_socket_handed_over_as_to_workers_send_without_delay(home):
    """`--workers N` gives each worker a listening socket whose protocol reads 0, on which asyncio would leave
    Nagle's algorithm on: each kept-alive answer would then wait ~40 ms for the client's delayed ACK."""
    accepted = []

    class Recorded(UVICORN_OPTIONS["http"]):
        def connection_made(self, transport):
            super().connection_made(transport)
            accepted.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    config = uvicorn.Config(
        create_app(ServerConfig(("faq",), str(home))), port=free_port(), **(UVICORN_OPTIONS | {"http": Recorded})
    )
    listening = config.bind_socket()  # as uvicorn's supervisor binds it for its workers
    assert listening.proto == 0
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "never started"
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{config.port}") as http:
            assert http.get("/healthz").status_code == 200
        assert accepted and all(accepted)
    finally:
        server.should_exit = True
        thread.join(60)
        listening.close()


def test_each_worker_model_takes_its_share_of_the_cores(home, monkeypatch):
    import uvicorn as uvicorn_module

    seen = {}

    def fake_run(app, **options):
        seen["threads"] = os.environ.get(searcher.server.THREADS_VARIABLE)
        seen["workers"] = options["workers"]

    monkeypatch.setattr(uvicorn_module, "run", fake_run)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delenv(searcher.server.THREADS_VARIABLE, raising=False)
    searcher.server.run(ServerConfig(("faq",), str(home)), "127.0.0.1", free_port(), 4)
    assert seen == {"threads": "2", "workers": 4}
    assert searcher.server.THREADS_VARIABLE not in os.environ  # set for the workers' lifetime only
    monkeypatch.setenv(searcher.server.THREADS_VARIABLE, "3")  # the user's own choice stands
    searcher.server.run(ServerConfig(("faq",), str(home)), "127.0.0.1", free_port(), 4)
    assert seen["threads"] == "3" and os.environ[searcher.server.THREADS_VARIABLE] == "3"


def test_once_ready_the_loaded_models_are_left_out_of_garbage_collections(home):
    """A full collection walking a loaded model's objects stopped every thread for ~300 ms."""
    gc.unfreeze()
    with TestClient(create_app(ServerConfig(("faq",), str(home)))) as client:
        wait_ready(client)
        frozen = gc.get_freeze_count()
        assert frozen > 10_000
        assert client.post("/v1/search", json={"index": "faq", "query": "reset my password"}).status_code == 200
    gc.unfreeze()
