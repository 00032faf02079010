"""The HTTP API: indexes served to support tools (helpdesk widgets, chat bots, ticket triage) over FastAPI.

fastapi, starlette, pydantic, uvicorn and prometheus-client are imported here and nowhere else.

Each served index has reader threads that answer searches side by side, a writer thread that applies
upserts and deletes under the index's writer lock, and a `QueryBatcher` thread that embeds the queries of
concurrent searches in shared forward passes. Every reader and the writer has its own `Index` over the same
files (SQLite connections belong to one thread); all share one loaded model. A `LogWriter` thread stores
logged questions and feedback in the index's question log (queries.sqlite), in batches: a search hands its
entry over and is answered without waiting for that write. A dense or hybrid search waits
for its vectors from the batcher, then ranks on a reader (or, finding the batcher idle, is embedded and
ranked on its thread at once); a keyword search goes straight to a reader, so it never waits behind the
model. SQLite's WAL lets readers go on while the writer writes, and a reader applies
the writer's changes to its vectors at its next search (see `vectorfile`).

Time is bounded everywhere a client could hold the server: a request's headers and body must arrive within
REQUEST_TIMEOUT_S, a batch's queries hold at most MAX_BATCH_CHARS characters, a request waits at most
QUEUE_TIMEOUT_S for a reader or the writer (then 503), a read is answered within REQUEST_BUDGET_S (then
503), and a write waits at most LOCK_TIMEOUT_S for another process's writer lock (then 409). Queues are
bounded too: past MAX_WAITING_PER_THREAD requests per thread, or the batcher's bound on waiting texts, a
request is answered 503 at once. Every 503 of a busy server carries `Retry-After`.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import ipaddress
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import h11
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .batching import QueryBatcher
from .errors import (
    ConfigError,
    DocumentNotFoundError,
    EmptyQueryError,
    ForbiddenError,
    IndexLockedError,
    IndexNotFoundError,
    InputTooLongError,
    InvalidFilterError,
    SearcherError,
    ServerBusyError,
    SourceError,
)
from .inbox import CONFUSABLE_SIMILARITY, asked_after
from .index import Index
from .manifest import VALID_VALUES
from .paths import existing_index_path
from .querylog import LogWriter, logged_queries
from .ratelimit import PUBLIC_RATE, RateLimiter
from .search import SEARCH_MODES, check_query, search_response
from .search import SearchOptions as RankingOptions
from .sources import Record
from .writes import MAX_PHRASINGS

log = logging.getLogger("searcher")
CONFIG_VARIABLE = "SEARCHER_SERVE_CONFIG"  # how `searcher serve` hands its settings to uvicorn's workers
THREADS_VARIABLE = "OMP_NUM_THREADS"  # CPU threads of a worker's model
MAX_K = 100
MAX_QUERY_CHARS = 10_000
MAX_BATCH_QUERIES = 64
# All queries of a batch together: what bounds the reader's time on one request (64 queries of 10,000
# characters in hybrid mode held it for 6 s).
MAX_BATCH_CHARS = 20_000
MAX_DOCUMENTS = 1_000  # per upsert or delete request
# Alternative wordings are embedded like documents: capped per upsert request (per document: MAX_PHRASINGS).
MAX_WRITE_PHRASINGS = 10_000
MAX_BODY_BYTES = 8 * 2**20
LOCK_TIMEOUT_S = 5.0  # a write's wait for another process's writer lock, then 409
QUEUE_TIMEOUT_S = 10.0  # a request's wait for a reader or the writer of its index to take it up, then 503
REQUEST_BUDGET_S = 10.0  # a read's whole time in the server (model, then reader), then 503
REPORT_BUDGET_S = 120.0  # the same for an inbox or an audit (5,000 logged questions embedded, then grouped)
READERS = 4  # reader threads per index: searches spend much of their time in SQLite and FAISS, outside the GIL
# Requests waiting per reader or writer thread, past which a request is answered 503 at once: with searches
# of a few milliseconds each, the last of them waits well under a second.
MAX_WAITING_PER_THREAD = 64
RETRY_AFTER_S = 1  # what a 503 of a busy server tells clients to wait
REQUEST_TIMEOUT_S = 10.0  # from a connection's start, or its previous response, to the whole next request
KEEP_ALIVE_S = 5  # an idle connection's life between requests
MAX_HEADER_BYTES = 16 * 2**10  # the request line and headers together
UNPROTECTED_PATHS = {"/healthz", "/readyz"}
# The pages for agents and the help centre: they hold no data (the API gives it, with a key), so anyone may
# load them.
WEB_DIR = Path(__file__).parent / "web"
PAGES = {"/": "index.html", "/inbox": "inbox.html", "/audit": "audit.html", "/widget.js": "widget.js"}
ASSETS_PATH = "/assets"
# The pages load nothing but their own scripts and styles, and talk to this server alone.
PAGE_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
# What the public key may do: search, nothing else.
PUBLIC_KEY_ROUTES = {("POST", "/v1/search"), ("POST", "/v1/search/batch")}
SEARCHABLE_KEY = "searcher.searchable"  # where BearerKey leaves the indexes a public-key request may search
METRICS_PATH = "/metrics"
MODE_KEY = "searcher.mode"  # where a search handler leaves its mode in the request's scope, for the metrics
WARM_UP_QUERY = "warm up"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Errors whose message is meant for the client (the request's fault, or a busy server), each answered with its
# status. Any other SearcherError is the server's own trouble: 503, its message (which may name the server's
# files) only in the log.
CLIENT_ERRORS: dict[type[SearcherError], int] = {
    IndexNotFoundError: 404,
    ConfigError: 400,
    InvalidFilterError: 400,
    EmptyQueryError: 400,
    InputTooLongError: 400,
    SourceError: 400,
    DocumentNotFoundError: 404,
    ForbiddenError: 403,
    IndexLockedError: 409,
    ServerBusyError: 503,
}

T = TypeVar("T")


@dataclass(frozen=True)
class ServerConfig:
    """What `searcher serve` serves and how: index names, their home, the API key's variable, CORS origins,
    how long a request waits for another process's writer lock and for its turn (seconds), reader threads per
    index, whether /metrics is open to callers without the key, whether every index's questions are logged
    (else those of indexes whose setting says so) and for how many days (else each index's own), and the
    public key's variable, the indexes it may search (all served ones if none) and its searches a minute per
    client address."""

    indexes: tuple[str, ...]
    home: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the bearer token
    cors_origins: tuple[str, ...] = ()
    lock_timeout: float = LOCK_TIMEOUT_S
    queue_timeout: float = QUEUE_TIMEOUT_S
    readers: int = READERS
    metrics_public: bool = False
    log_queries: bool = False
    log_days: int | None = None
    public_key_env: str | None = None
    public_indexes: tuple[str, ...] = ()
    public_rate: int = PUBLIC_RATE

    def check(self) -> Keys:
        """The API key and the public key, after making sure every index exists, there are readers, and the
        keys' variables are set."""
        if self.readers < 1:
            raise ConfigError(f"an index needs at least one reader thread, got {self.readers}")
        valid_days, what = VALID_VALUES["log_days"]
        if self.log_days is not None and not valid_days(self.log_days):
            raise ConfigError(f"--log-days {self.log_days!r} {what}")
        for name in self.indexes:
            existing_index_path(name, self.home)
        api_key = _key(self.api_key_env, "API key")
        public_key = _key(self.public_key_env, "public key")
        if public_key is None:
            return Keys(api_key, None)
        if api_key is None:
            raise ConfigError(
                "a public key limits what callers may do only if the API key guards the rest: give --api-key-env too"
            )
        if hmac.compare_digest(public_key, api_key):
            raise ConfigError(f"the public key ({self.public_key_env}) must differ from the API key")
        if self.public_rate < 1:
            raise ConfigError(f"--public-rate must be at least 1 search a minute, got {self.public_rate}")
        unserved = sorted(set(self.public_indexes) - set(self.indexes))
        if unserved:
            raise ConfigError(f"--public-index names indexes not served: {', '.join(unserved)}")
        return Keys(api_key, public_key)

    @property
    def searchable(self) -> frozenset[str]:
        """The indexes the public key may search."""
        return frozenset(self.public_indexes or self.indexes)

    def to_environment(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> ServerConfig:
        values = json.loads(os.environ[CONFIG_VARIABLE])
        fields: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value for key, value in values.items()
        }
        return cls(**fields)


@dataclass(frozen=True)
class Keys:
    api: str | None  # every request but the public paths' needs it, when set
    public: str | None  # may search, and nothing else


def _key(variable: str | None, what: str) -> str | None:
    """The key in VARIABLE; None if no variable is named. ConfigError if it is unset or empty."""
    if variable is None:
        return None
    key = os.environ.get(variable, "")
    if not key:
        raise ConfigError(f"the {what} variable {variable} is not set or empty")
    return key


Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
Filter = dict[str, Any]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SearchOptions(Strict):
    index: str
    k: int = Field(10, ge=1, le=MAX_K)
    mode: Literal[SEARCH_MODES] = "dense"  # type: ignore[valid-type]
    min_score: float | None = None
    filter: Filter | None = Field(None, description='{"field": value} or {"field": {"in": [values]}}; all must hold')


class SearchRequest(SearchOptions):
    query: Query


class BatchSearchRequest(SearchOptions):
    queries: list[Query] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)

    @field_validator("queries")
    @classmethod
    def _within_budget(cls, queries: list[str]) -> list[str]:
        characters = sum(map(len, queries))
        if characters > MAX_BATCH_CHARS:
            raise ValueError(
                f"the queries hold {characters:,} characters; at most {MAX_BATCH_CHARS:,} characters per batch"
            )
        return queries


class Document(Strict):
    id: Annotated[str, Field(min_length=1)] | int
    text: str
    title: str = ""  # stored before the text, as a file's title field is, and put before each of its passages
    fields: dict[str, Any] = {}
    phrasings: list[str] = []


class UpsertRequest(Strict):
    documents: list[Document] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class DeleteRequest(Strict):
    ids: list[str] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class FeedbackRequest(Strict):
    index: str
    query: Query
    id: Annotated[str, Field(min_length=1)]
    helpful: Annotated[bool, Field(strict=True)]


class IndexThreads:
    """COUNT threads, each with its own `Index` opened and closed on it (SQLite connections belong to one
    thread), taking work from one queue: whichever is free takes the next.

    At most `max_waiting_per_thread` pieces of work per thread wait; past that `submit` refuses at once
    (ServerBusyError), rather than letting a request wait its whole queue timeout behind a crowd.
    """

    max_waiting_per_thread = MAX_WAITING_PER_THREAD

    def __init__(self, name: str, kind: str, count: int, open_index: Callable[[], Index]) -> None:
        self.name = name
        self.max_waiting = count * self.max_waiting_per_thread
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[Index], Any]] | None] = queue.SimpleQueue()
        self._waiting = 0
        self._lock = threading.Lock()
        opened: list[Future[None]] = [Future() for _ in range(count)]
        self._threads = [
            threading.Thread(target=self._serve, args=(open_index, ready), name=f"{kind}-{name}-{number}", daemon=True)
            for number, ready in enumerate(opened)
        ]
        for thread in self._threads:
            thread.start()
        try:
            for ready in opened:
                ready.result()
        except BaseException:
            self.close()
            raise

    @property
    def waiting(self) -> int:
        """Work submitted and not yet taken up by a thread."""
        return self._waiting

    def submit(self, work: Callable[[Index], T]) -> Future[T]:
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise ServerBusyError(
                    f"index {self.name!r} is busy: {self._waiting:,} requests wait for it already; retry later"
                )
            self._waiting += 1
        future: Future[T] = Future()
        self._work.put((future, work))
        return future

    def close(self) -> None:
        """Finish the work submitted, then close each thread's index on its thread."""
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()

    def _serve(self, open_index: Callable[[], Index], opened: Future[None]) -> None:
        try:
            index = open_index()
        except BaseException as error:
            opened.set_exception(error)
            return
        opened.set_result(None)
        try:
            while (item := self._work.get()) is not None:
                future, work = item
                with self._lock:
                    self._waiting -= 1
                if future.set_running_or_notify_cancel():  # else its request gave up waiting
                    try:
                        future.set_result(work(index))
                    except BaseException as error:
                        future.set_exception(error)
        finally:
            index.close()


class ServedIndex:
    """One index behind the API: reader threads answering side by side, one writer thread, a batcher
    embedding concurrent searches' queries together (one loaded model for all of them), and a log writer
    storing the questions, when they are logged, and feedback."""

    def __init__(self, name: str, config: ServerConfig, metrics: Metrics) -> None:
        self.name = name
        self.queue_timeout = config.queue_timeout
        self._log_every_search = config.log_queries
        self._documents = metrics.documents.labels(name)
        with ExitStack() as undo:  # a failed load leaves no thread behind
            self._writer = IndexThreads(name, "write", 1, lambda: _writer_index(name, config))
            undo.callback(self._writer.close)
            started = time.perf_counter()
            model = self._writer.submit(_with_model).result()
            metrics.model_load.labels(name).set(time.perf_counter() - started)
            # The batcher embeds through the writer's Index: `embed_queries` touches the model alone, no
            # SQLite connection, so its thread may call it.
            self._batch_texts = metrics.batch_texts.labels(name)
            self.batcher = QueryBatcher(name, model.embed_queries, self._batch_texts.observe)
            undo.callback(self.batcher.close)
            warm = self.batcher.submit([WARM_UP_QUERY]).result()  # the first forward pass is slower: paid before ready

            def open_reader() -> Index:
                return _warmed(Index.open(name, config.home, embedder=model.embedder), warm)

            # The batcher's own index, opened on its thread, for searches that come alone (see `search`).
            self._alone = self.batcher.run(open_reader).result()
            undo.callback(lambda: self.batcher.run(self._alone.close).result())

            self.readers = IndexThreads(name, "read", config.readers, open_reader)
            undo.callback(self.readers.close)
            self._documents.set(self.readers.submit(len).result())
            path, log_days = self.readers.submit(lambda index: (index.path, index.manifest.log_days)).result()
            self.log = LogWriter(path, config.log_days or log_days, name)
            undo.pop_all()
        metrics.embed_queue.labels(name).set_function(lambda: self.batcher.waiting_texts)
        metrics.read_queue.labels(name).set_function(lambda: self.readers.waiting)

    async def search(self, request: SearchOptions, queries: list[str]) -> list[dict[str, Any]]:
        """QUERIES answered as `searcher query --json` answers one, within REQUEST_BUDGET_S (else ServerBusyError).

        The request is checked before it costs any model time; dense and hybrid queries are embedded by the
        batcher, together with other requests', while keyword ones go straight to a reader.
        """
        deadline = time.monotonic() + REQUEST_BUDGET_S
        for query in queries:
            check_query(query)
        options = RankingOptions(request.k, request.mode, request.min_score, filters=request.filter)
        if options.needs_vector and len(queries) == 1 and self.batcher.idle:
            # Alone: embedded and ranked on the model's thread in one hand-off rather than two, as fast as a
            # search of its own (one client: dense p50 6.7 ms through the batcher and a reader, 4.8 ms before).
            alone = self.batcher.run(lambda: self._search_alone(request, queries))
            return await self._until(asyncio.wrap_future(alone), deadline)
        vectors = None
        if options.needs_vector:
            vectors = await self._until(asyncio.wrap_future(self.batcher.submit(queries)), deadline)
        return await self.read(lambda index: self._answer(index, request, queries, vectors), deadline)

    def _search_alone(self, request: SearchOptions, queries: list[str]) -> list[dict[str, Any]]:
        """QUERIES embedded and ranked on the batcher's thread, with its own index."""
        answer = self._answer(self._alone, request, queries, None)
        self._batch_texts.observe(len(queries))
        return answer

    def _answer(
        self, index: Index, options: SearchOptions, queries: list[str], vectors: np.ndarray | None
    ) -> list[dict[str, Any]]:
        """QUERIES answered as `searcher query --json` answers one, with their VECTORS for dense and hybrid.

        Logged when the server or the index says so: through the log writer, as readers never write.
        """
        found = index.search_many(
            queries, options.k, options.mode, options.min_score, filters=options.filter, vectors=vectors, log=False
        )
        manifest = index.manifest
        if self._log_every_search or manifest.log_queries:
            self.log.log(logged_queries(queries, found, options.mode, options.filter))
        threshold = manifest.threshold(options.mode)
        return [
            search_response(index.name, query, options.mode, threshold, hits)
            for query, hits in zip(queries, found, strict=True)
        ]

    async def feedback(self, request: FeedbackRequest) -> None:
        """Store REQUEST's feedback (through the log writer), within REQUEST_BUDGET_S."""
        check_query(request.query)  # here, so that a refused request leaves no file behind
        stored = self.log.feedback(request.query, request.id, request.helpful)
        await self._until(asyncio.wrap_future(stored), time.monotonic() + REQUEST_BUDGET_S)

    async def read(self, work: Callable[[Index], T], deadline: float | None = None) -> T:
        """WORK's answer from a reader, by DEADLINE (time.monotonic(); REQUEST_BUDGET_S from now by default)."""
        if deadline is None:
            deadline = time.monotonic() + REQUEST_BUDGET_S
        return await self._run(self.readers, work, deadline)

    async def write(self, work: Callable[[Index], T]) -> T:
        """WORK's answer from the writer, however long it writes once begun."""

        def counted(index: Index) -> T:
            answer = work(index)
            self._documents.set(len(index))  # here, where a count is cheap and known to have changed
            return answer

        return await self._run(self._writer, counted, None)

    async def _run(self, threads: IndexThreads, work: Callable[[Index], T], deadline: float | None) -> T:
        """WORK's answer; ServerBusyError if no thread has taken it up within the queue timeout (or by
        DEADLINE), so that requests queued behind slow ones are answered at once rather than late, and are
        not worked on after; ServerBusyError too if it is not done by DEADLINE."""
        future = threads.submit(work)
        answer = asyncio.wrap_future(future)
        wait = self.queue_timeout if deadline is None else min(self.queue_timeout, deadline - time.monotonic())
        try:
            return await asyncio.wait_for(asyncio.shield(answer), wait)
        except TimeoutError:
            if future.cancel():
                raise ServerBusyError(
                    f"index {self.name!r} is busy: this request waited {wait:.3g} s for earlier ones; retry later"
                ) from None
        # Begun already: its answer is worth the rest of the wait.
        return await (answer if deadline is None else self._until(answer, deadline))

    async def _until(self, answer: asyncio.Future[T], deadline: float) -> T:
        try:
            return await asyncio.wait_for(answer, deadline - time.monotonic())
        except TimeoutError:
            raise ServerBusyError(
                f"index {self.name!r} is busy: this request was not answered within {REQUEST_BUDGET_S:g} s; retry later"
            ) from None

    def close(self) -> None:
        self.readers.close()
        self.batcher.run(self._alone.close).result()  # on the thread that opened it, as SQLite wants
        for part in (self.batcher, self._writer, self.log):
            part.close()


def _writer_index(name: str, config: ServerConfig) -> Index:
    return Index.open(name, config.home, lock_timeout=config.lock_timeout)


def _with_model(index: Index) -> Index:
    """INDEX, its model loaded and checked against the manifest."""
    index.embedder  # noqa: B018 (loading is what is asked for)
    return index


def _warmed(index: Index, vectors: np.ndarray) -> Index:
    """INDEX, its vectors loaded by a first search: paid before ready rather than by a client."""
    index.search_many([WARM_UP_QUERY], k=1, vectors=vectors, log=False)
    return index


class Indexes:
    """The served indexes, loaded in the background so that the server is alive (healthz) before ready."""

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.served: dict[str, ServedIndex] = {}
        self.failure: str | None = None
        self.ready = False

    def load(self) -> None:
        for name in self.config.indexes:
            try:
                self.served[name] = ServedIndex(name, self.config, self.metrics)
            except Exception as error:  # whatever stops a model or index from loading must show, not hang /readyz
                # Unauthenticated clients read /readyz: they learn which index failed, the log says where and why.
                self.failure = f"index {name!r} cannot be served ({type(error).__name__}); see the server log"
                log.error("cannot serve index %r: %s", name, str(error).splitlines()[0])
                return
        # The loaded models are hundreds of thousands of objects that live as long as the process: left in the
        # collector's generations, each full collection walked them all, stopping every thread for ~300 ms
        # (the p99 of dense searches at 32 clients). Frozen, collections walk only what requests allocate.
        gc.collect()
        gc.freeze()
        self.ready = True
        log.info("serving %s", ", ".join(self.config.indexes))

    @property
    def loading(self) -> list[str]:
        return [name for name in self.config.indexes if name not in self.served]

    def require_ready(self) -> None:
        if not self.ready:
            raise HTTPException(503, self.failure or "the indexes are still loading; retry when /readyz says ready")

    def get(self, name: str) -> ServedIndex:
        self.require_ready()
        if name not in self.served:
            raise HTTPException(404, f"index {name!r} is not served here")
        return self.served[name]

    def close(self) -> None:
        for served in self.served.values():
            served.close()


def create_app(config: ServerConfig) -> FastAPI:
    """The API over CONFIG's indexes; they are checked to exist now and loaded once the server runs."""
    keys = config.check()
    metrics = Metrics()
    indexes = Indexes(config, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        loading = asyncio.get_running_loop().run_in_executor(None, indexes.load)
        yield
        await loading
        indexes.close()

    app = FastAPI(title="searcher", summary="Semantic search by meaning over searcher indexes.", lifespan=lifespan)
    app.state.indexes = indexes
    _add_error_handlers(app)
    # The last middleware added runs first: metrics (which count every answer), size limit, then CORS (whose
    # preflights carry no key), then the key.
    if keys.api is not None:
        public = UNPROTECTED_PATHS | set(PAGES) | ({METRICS_PATH} if config.metrics_public else set())
        search_key = None
        if keys.public is not None:
            search_key = SearchKey(keys.public.encode(), config.searchable, RateLimiter(config.public_rate))
        app.add_middleware(BearerKey, key=keys.api, public=public, search_key=search_key)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(Measured, metrics=metrics, routes=app.router.routes)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up (its indexes may still be loading)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Every index is open and its model loaded: searches will be answered."""
        if indexes.ready:
            return JSONResponse({"status": "ready", "indexes": list(indexes.served)})
        if indexes.failure:
            return JSONResponse({"status": "failed", "error": indexes.failure}, status_code=503)
        loading = f"still loading: {', '.join(indexes.loading)}"
        return JSONResponse({"status": "loading", "error": loading}, status_code=503)

    @app.get(METRICS_PATH, tags=["health"])
    async def metrics_text() -> Response:
        """Prometheus metrics: requests, latencies and statuses by endpoint, queues, batch sizes, documents,
        model load times."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for path, file_name in PAGES.items():
        app.add_api_route(path, _page(WEB_DIR / file_name), methods=["GET"], include_in_schema=False)
    app.mount(ASSETS_PATH, StaticFiles(directory=WEB_DIR / "assets"), name="assets")

    @app.post("/v1/search", tags=["search"])
    async def search(request: SearchRequest, http: Request) -> JSONResponse:
        """The K best documents for one query, as `searcher query --json` gives them."""
        _require_searchable(http, request.index)
        http.scope[MODE_KEY] = request.mode
        return JSONResponse((await indexes.get(request.index).search(request, [request.query]))[0])

    @app.post("/v1/search/batch", tags=["search"])
    async def search_batch(request: BatchSearchRequest, http: Request) -> JSONResponse:
        """Several queries against one index, answered in order, embedded in one forward pass."""
        _require_searchable(http, request.index)
        http.scope[MODE_KEY] = request.mode
        return JSONResponse({"results": await indexes.get(request.index).search(request, request.queries)})

    @app.put("/v1/indexes/{name}/documents", tags=["documents"])
    async def upsert(name: str, request: UpsertRequest) -> dict[str, Any]:
        """Add documents, replacing those with the same id; unchanged ones are not embedded again."""
        records = _records(request.documents)
        report = await indexes.get(name).write(lambda index: index.add(records))
        return asdict(report) | {"documents": report.documents}

    @app.delete("/v1/indexes/{name}/documents", tags=["documents"])
    async def delete(name: str, request: DeleteRequest) -> dict[str, Any]:
        """Remove documents by id; ids not in the index are listed as not found."""
        deleted = await indexes.get(name).write(lambda index: index.delete(request.ids))
        return {"deleted": sorted(deleted), "not_found": sorted(set(request.ids) - set(deleted))}

    @app.post("/v1/feedback", tags=["feedback"])
    async def feedback(request: FeedbackRequest) -> dict[str, bool]:
        """Record whether a document answered a question, for `searcher feedback --export` and tuning; kept
        whether or not questions are logged."""
        await indexes.get(request.index).feedback(request)
        return {"recorded": True}

    @app.get("/v1/indexes", tags=["indexes"])
    async def list_served() -> dict[str, Any]:
        """The served indexes and their document counts."""
        indexes.require_ready()
        counts = {name: await served.read(len) for name, served in indexes.served.items()}
        return {"indexes": [{"name": name, "documents": count} for name, count in counts.items()]}

    @app.get("/v1/indexes/{name}", tags=["indexes"])
    async def describe(name: str) -> JSONResponse:
        """An index's manifest (model, pooling, precision, vector structure...), document count and size."""
        details = await indexes.get(name).read(lambda index: index.info())
        manifest = details["manifest"] | {"model": _model_name(details["manifest"]["model"])}
        return JSONResponse({key: value for key, value in details.items() if key != "path"} | {"manifest": manifest})

    @app.get("/v1/indexes/{name}/fields", tags=["indexes"])
    async def fields(name: str) -> JSONResponse:
        """Each stored field's distinct values, for filters: fields holding only text, numbers or booleans, at
        most 50 distinct values each."""
        return JSONResponse({"fields": await indexes.get(name).read(lambda index: index.field_values())})

    @app.get("/v1/indexes/{name}/documents/{document_id:path}", tags=["documents"])
    async def document(name: str, document_id: str) -> JSONResponse:
        """One stored document as an upsert takes it back (id, title, text, fields, phrasings): read, change,
        PUT."""
        return JSONResponse(await indexes.get(name).read(lambda index: index.document(document_id)))

    @app.get("/v1/indexes/{name}/inbox", tags=["support desk"])
    async def inbox(name: str, since: str | None = None, min_score: float | None = None) -> JSONResponse:
        """The logged questions the index does not cover, grouped by meaning (as `searcher inbox --json`).
        SINCE: only questions of this past span (30m, 12h, 7d, 2w)."""
        start = asked_after(since)
        groups = await indexes.get(name).read(lambda index: index.inbox(start, min_score), _report_deadline())
        return JSONResponse({"index": name, "groups": [group.as_json() for group in groups]})

    @app.get("/v1/indexes/{name}/audit", tags=["support desk"])
    async def audit(name: str, min_similarity: float = CONFUSABLE_SIMILARITY) -> JSONResponse:
        """Confusable entries, entries never found first, entries their own question misses (as `searcher audit
        --json`)."""
        report = await indexes.get(name).read(lambda index: index.audit(min_similarity), _report_deadline())
        return JSONResponse(report.as_json())

    return app


def _page(path: Path) -> Callable[[], Any]:
    """The handler of a page or script from WEB_DIR."""

    async def page() -> FileResponse:
        headers = {"Content-Security-Policy": PAGE_POLICY} if path.suffix == ".html" else None
        return FileResponse(path, headers=headers)

    return page


def _require_searchable(http: Request, index: str) -> None:
    """ForbiddenError (403) if the request came with the public key and INDEX is not one it may search."""
    searchable = http.scope.get(SEARCHABLE_KEY)
    if searchable is not None and index not in searchable:
        raise ForbiddenError(f"the public key may not search index {index!r}")


def _report_deadline() -> float:
    """When an inbox or audit must be answered: each embeds a log's questions or an index's entries."""
    return time.monotonic() + REPORT_BUDGET_S


def app_from_environment() -> FastAPI:
    """The app for uvicorn's worker processes, from the settings `searcher serve` put in the environment."""
    return create_app(ServerConfig.from_environment())


def run(config: ServerConfig, host: str, port: int, workers: int) -> None:
    """Serve until interrupted; every worker process loads the indexes and models once."""
    import uvicorn

    config.check()  # fail here, with one message, rather than in each worker
    if workers == 1:
        uvicorn.run(create_app(config), host=host, port=port, **UVICORN_OPTIONS)
        return
    # Worker processes import the app by name and inherit the environment: the one way to hand them the
    # settings. The variables are set for as long as they run, and only in this process and its children.
    # Each worker's model takes its share of the CPU cores (torch reads OMP_NUM_THREADS as it loads), unless
    # the variable says otherwise: N models each on every core would wait on one another's threads.
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    settings = {CONFIG_VARIABLE: config.to_environment(), THREADS_VARIABLE: os.environ.get(THREADS_VARIABLE, threads)}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        uvicorn.run(
            "searcher.server:app_from_environment",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            **UVICORN_OPTIONS,
        )
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_loopback(host: str) -> bool:
    """Whether HOST is reachable from this machine only; a host name other than localhost may be any address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _records(documents: list[Document]) -> list[Record]:
    """DOCUMENTS as records; SourceError (400) naming the first document with too many alternative wordings
    (each is embedded like a document) or holding what cannot be stored: NaN or an infinity (not JSON, on
    which every filtered search would fail) or a lone surrogate (not text)."""
    wordings = 0
    for document in documents:
        name = str(document.id)
        wordings += len(document.phrasings)
        if len(document.phrasings) > MAX_PHRASINGS:
            raise SourceError(
                f"document {name!r} has {len(document.phrasings):,} alternative wordings; "
                f"at most {MAX_PHRASINGS:,} per document"
            )
        if wordings > MAX_WRITE_PHRASINGS:
            raise SourceError(
                f"document {name!r} takes the request past {MAX_WRITE_PHRASINGS:,} alternative wordings in all: "
                "send fewer documents per request"
            )
        if not _storable([document.title, document.text, document.phrasings]):
            raise SourceError(f"document {name!r}: its title, text or an alternative wording holds a lone surrogate")
        for field, value in document.fields.items():
            if not _storable({field: value}):
                raise SourceError(
                    f"document {name!r}: field {field!r} holds NaN, an infinity or a lone surrogate, "
                    "which cannot be stored as JSON"
                )
    return [
        Record(
            str(document.id),
            f"{document.title} {document.text}" if document.title else document.text,
            document.fields,
            tuple(document.phrasings),
            document.title,
        )
        for document in documents
    ]


def _storable(value: Any) -> bool:
    """Whether VALUE is JSON in UTF-8, as the index stores it: no NaN, no infinity, no lone surrogate."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except ValueError:  # UnicodeEncodeError is one
        return False
    return True


def _model_name(model: str) -> str:
    """A local model directory by its name alone, a Hugging Face id as it is: clients need not know the
    server's paths."""
    path = Path(model).expanduser()
    return path.name if path.is_absolute() or model.startswith(".") or path.is_dir() else model


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as {"error": message}: 4xx for the request's fault, 503 for the index's, never a stack trace."""

    @app.exception_handler(SearcherError)
    async def searcher_error(_: Request, error: SearcherError) -> JSONResponse:
        status = next((code for kind, code in CLIENT_ERRORS.items() if isinstance(error, kind)), None)
        if status is not None:
            busy = isinstance(error, ServerBusyError)
            headers = {"Retry-After": str(RETRY_AFTER_S)} if busy else None
            return JSONResponse({"error": str(error)}, status_code=status, headers=headers)
        log.error("%s: %s", type(error).__name__, error)
        return JSONResponse(
            {"error": f"index unavailable ({type(error).__name__}); see the server log"}, status_code=503
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(part) for part in problem['loc'] if part != 'body') or 'body'}: {problem['msg']}"
            for problem in error.errors()
        ]
        return JSONResponse({"error": "; ".join(problems)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse({"error": f"internal error ({type(error).__name__}); see the server log"}, status_code=500)


class Metrics:
    """The server's Prometheus metrics, in a registry of its own: several apps in one process (tests) must
    not count into one another's."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        by_request = ["endpoint", "mode"]  # endpoint: the route's path, e.g. /v1/indexes/{name}/documents
        self.requests = Counter(
            "searcher_requests", "HTTP requests by endpoint and search mode", by_request, registry=registry
        )
        self.latency = Histogram(
            "searcher_request_duration_seconds",
            "Seconds from a request's arrival to its answer, by endpoint and search mode",
            by_request,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.responses = Counter(
            "searcher_responses", "HTTP responses by endpoint and status", ["endpoint", "status"], registry=registry
        )
        self.embed_queue = Gauge(
            "searcher_embed_queue_texts", "Query texts waiting for the model", ["index"], registry=registry
        )
        self.read_queue = Gauge(
            "searcher_read_queue_requests", "Requests waiting for a reader thread", ["index"], registry=registry
        )
        self.batch_texts = Histogram(
            "searcher_embed_batch_texts",
            "Query texts per forward pass",
            ["index"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.documents = Gauge(
            "searcher_index_documents",
            "Documents in the index, as of its load or this process's last write to it",
            ["index"],
            registry=registry,
        )
        self.model_load = Gauge(
            "searcher_model_load_seconds", "Seconds to load and check the index's model", ["index"], registry=registry
        )

    def answered(self, endpoint: str, mode: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, mode).inc()
        self.latency.labels(endpoint, mode).observe(seconds)
        self.responses.labels(endpoint, str(status)).inc()


class Measured:
    """Counts and times every request by endpoint (its route's path; `unmatched` for others) and search mode
    (`none` outside searches), and counts its answer's status, refusals by the middleware after it included."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts: an exception no handler turned into one

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            mode = scope.get(MODE_KEY, "none")
            self.metrics.answered(self._endpoint(scope), mode, status, time.perf_counter() - started)

    def _endpoint(self, scope: Scope) -> str:
        """The path of the route SCOPE's request is for: a bounded set of labels, whatever paths clients send."""
        routes = (route for route in self.routes if isinstance(route, Route))
        return next((route.path for route in routes if route.matches(scope)[0] == Match.FULL), "unmatched")


@dataclass(frozen=True)
class SearchKey:
    """The public key: it may search the SEARCHABLE indexes, as often as LIMITER lets each client address."""

    key: bytes
    searchable: frozenset[str]
    limiter: RateLimiter


class BearerKey:
    """Requires `Authorization: Bearer KEY` on every path but PUBLIC ones (health checks, pages) and the
    assets, compared in constant time; or the SEARCH_KEY, on searches alone (else 403), within its rate limit
    (else 429), leaving the indexes it may search in the request's scope for the handlers to check."""

    def __init__(self, app: ASGIApp, key: str, public: set[str], search_key: SearchKey | None = None) -> None:
        self.app = app
        self.key = key.encode()
        self.public = public
        self.search_key = search_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        token = token.strip() if scheme.lower() == b"bearer" else b""
        if hmac.compare_digest(token, self.key):
            await self.app(scope, receive, send)
            return
        if self.search_key is None or not hmac.compare_digest(token, self.search_key.key):
            refusal = JSONResponse(
                {"error": "missing or wrong API key: send Authorization: Bearer <key>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif (scope["method"], scope["path"]) not in PUBLIC_KEY_ROUTES:
            refusal = JSONResponse({"error": "the public key may only search (POST /v1/search)"}, status_code=403)
        elif wait := self.search_key.limiter.retry_after(_client_address(scope)):
            refusal = JSONResponse(
                {"error": f"too many searches from this address; retry in {wait} s"},
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        else:
            scope[SEARCHABLE_KEY] = self.search_key.searchable
            await self.app(scope, receive, send)
            return
        await refusal(scope, receive, send)

    def _is_public(self, path: str) -> bool:
        return path in self.public or path.startswith(ASSETS_PATH + "/")


def _client_address(scope: Scope) -> str:
    """The address a request came from (a proxy's, behind one)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


class BodyLimit:
    """Refuses request bodies over LIMIT bytes (413), by their Content-Length or as they arrive."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"request body over {self.limit:,} bytes: send fewer documents or queries per request"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"error": self._message()}, status_code=413)(scope, receive, send)


class RequestDeadline(H11Protocol):
    """uvicorn's HTTP/1.1, closing a connection whose next request (headers and body) has not all arrived
    `seconds` after the connection opened or its previous response went out.

    uvicorn times out only idle connections between requests, and every byte received restarts that clock:
    a client sending a byte at a time would hold a connection, and a request waiting for its body, for ever.
    """

    seconds = REQUEST_TIMEOUT_S
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # With --workers N, uvicorn hands each worker a listening socket whose protocol reads 0, so asyncio
        # leaves Nagle's algorithm on for its connections: each answer on a kept-alive connection then waited
        # ~40 ms for the client's delayed ACK (one client: 48 ms rather than 4 ms a dense search).
        connection = transport.get_extra_info("socket")
        if connection is not None and connection.family in (socket.AF_INET, socket.AF_INET6):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._restart_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._restart_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _restart_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.seconds, self._expire)

    def _expire(self) -> None:
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()


# How uvicorn serves the app: quiet, without a Server header, and bounded in time and size per connection.
UVICORN_OPTIONS: dict[str, Any] = {
    "log_level": "warning",
    "server_header": False,
    "http": RequestDeadline,
    "timeout_keep_alive": KEEP_ALIVE_S,
    "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
}
