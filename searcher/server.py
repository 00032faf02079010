"""The HTTP API: indexes served to support tools (helpdesk widgets, chat bots, ticket triage) over FastAPI.

fastapi, starlette, pydantic and uvicorn are imported here and nowhere else.

Each served index has two threads, each with its own `Index` over the same files (SQLite connections
belong to one thread): a reader that answers searches and a writer that applies upserts and deletes under
the index's writer lock. They share one loaded model. SQLite's WAL lets the reader go on while the writer
writes, and the reader picks up the writer's saved vectors at its next search.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import (
    ConfigError,
    EmptyQueryError,
    IndexLockedError,
    IndexNotFoundError,
    InputTooLongError,
    InvalidFilterError,
    SearcherError,
    SourceError,
)
from .index import Index
from .paths import existing_index_path
from .search import SEARCH_MODES, search_response
from .sources import Record

log = logging.getLogger("searcher")
CONFIG_VARIABLE = "SEARCHER_SERVE_CONFIG"  # how `searcher serve` hands its settings to uvicorn's workers
MAX_K = 100
MAX_QUERY_CHARS = 10_000
MAX_BATCH_QUERIES = 64
MAX_DOCUMENTS = 1_000  # per upsert or delete request
MAX_BODY_BYTES = 8 * 2**20
UNPROTECTED_PATHS = {"/healthz", "/readyz"}
# Errors caused by the request, each answered with its status; any other SearcherError is the server's (503).
CLIENT_ERRORS: dict[type[SearcherError], int] = {
    IndexNotFoundError: 404,
    ConfigError: 400,
    InvalidFilterError: 400,
    EmptyQueryError: 400,
    InputTooLongError: 400,
    SourceError: 400,
    IndexLockedError: 409,
}

T = TypeVar("T")


@dataclass(frozen=True)
class ServerConfig:
    """What `searcher serve` serves and how: index names, their home, the API key's variable, CORS origins."""

    indexes: tuple[str, ...]
    home: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the bearer token
    cors_origins: tuple[str, ...] = ()

    def check(self) -> str | None:
        """The API key, after making sure every index exists and the key's variable is set."""
        for name in self.indexes:
            existing_index_path(name, self.home)
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ConfigError(f"the API key variable {self.api_key_env} is not set or empty")
        return key

    def to_environment(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> ServerConfig:
        values = json.loads(os.environ[CONFIG_VARIABLE])
        fields: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value for key, value in values.items()
        }
        return cls(**fields)


Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
Filter = dict[str, Any]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class Document(Strict):
    id: Annotated[str, Field(min_length=1)] | int
    text: str
    fields: dict[str, Any] = {}
    phrasings: list[str] = []


class UpsertRequest(Strict):
    documents: list[Document] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class DeleteRequest(Strict):
    ids: list[str] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class ServedIndex:
    """One index behind the API: a reader thread and a writer thread, each with its own `Index`, one model."""

    def __init__(self, name: str, home: str | None) -> None:
        self.name = name
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"read-{name}")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"write-{name}")
        self._read_index = self._reader.submit(self._open_reader, home).result()
        model = self._read_index.embedder
        self._write_index = self._writer.submit(Index.open, name, home, embedder=model).result()

    def _open_reader(self, home: str | None) -> Index:
        index = Index.open(self.name, home)
        index.search("warm up", k=1)  # loads the vectors, and the first forward pass is slower: paid before ready
        return index

    async def read(self, work: Callable[[Index], T]) -> T:
        return await asyncio.wrap_future(self._reader.submit(work, self._read_index))

    async def write(self, work: Callable[[Index], T]) -> T:
        return await asyncio.wrap_future(self._writer.submit(work, self._write_index))

    def close(self) -> None:
        for executor, index in ((self._reader, self._read_index), (self._writer, self._write_index)):
            executor.submit(index.close).result()
            executor.shutdown()


class Indexes:
    """The served indexes, loaded in the background so that the server is alive (healthz) before ready."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.served: dict[str, ServedIndex] = {}
        self.failure: str | None = None
        self.ready = False

    def load(self) -> None:
        try:
            for name in self.config.indexes:
                self.served[name] = ServedIndex(name, self.config.home)
            self.ready = True
            log.info("serving %s", ", ".join(self.config.indexes))
        except Exception as error:  # whatever stops a model or index from loading must show in /readyz, not hang it
            self.failure = f"cannot serve: {error}".splitlines()[0]
            log.error(self.failure)

    def require_ready(self) -> None:
        if not self.ready:
            raise HTTPException(503, self.failure or "the indexes are still loading; retry when /readyz says ready")

    def get(self, name: str) -> ServedIndex:
        self.require_ready()
        if name not in self.served:
            raise HTTPException(404, f"index {name!r} is not served here (served: {', '.join(self.served)})")
        return self.served[name]

    def close(self) -> None:
        for served in self.served.values():
            served.close()


def create_app(config: ServerConfig) -> FastAPI:
    """The API over CONFIG's indexes; they are checked to exist now and loaded once the server runs."""
    api_key = config.check()
    indexes = Indexes(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        loading = asyncio.get_running_loop().run_in_executor(None, indexes.load)
        yield
        await loading
        indexes.close()

    app = FastAPI(title="searcher", summary="Semantic search by meaning over searcher indexes.", lifespan=lifespan)
    _add_error_handlers(app)
    # The last middleware added runs first: size limit, then CORS (whose preflights carry no key), then the key.
    if api_key is not None:
        app.add_middleware(BearerKey, key=api_key)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up (its indexes may still be loading)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Every index is open and its model loaded: searches will be answered."""
        if indexes.ready:
            return JSONResponse({"status": "ready", "indexes": list(indexes.served)})
        return JSONResponse(
            {"status": "failed" if indexes.failure else "loading", "error": indexes.failure}, status_code=503
        )

    @app.post("/v1/search", tags=["search"])
    async def search(request: SearchRequest) -> dict[str, Any]:
        """The K best documents for one query, as `searcher query --json` gives them."""
        served = indexes.get(request.index)
        return (await served.read(lambda index: _search(index, request, [request.query])))[0]

    @app.post("/v1/search/batch", tags=["search"])
    async def search_batch(request: BatchSearchRequest) -> dict[str, Any]:
        """Several queries against one index, answered in order."""
        served = indexes.get(request.index)
        return {"results": await served.read(lambda index: _search(index, request, request.queries))}

    @app.put("/v1/indexes/{name}/documents", tags=["documents"])
    async def upsert(name: str, request: UpsertRequest) -> dict[str, Any]:
        """Add documents, replacing those with the same id; unchanged ones are not embedded again."""
        records = [
            Record(str(document.id), document.text, document.fields, tuple(document.phrasings))
            for document in request.documents
        ]
        report = await indexes.get(name).write(lambda index: index.add(records))
        return asdict(report) | {"documents": report.documents}

    @app.delete("/v1/indexes/{name}/documents", tags=["documents"])
    async def delete(name: str, request: DeleteRequest) -> dict[str, Any]:
        """Remove documents by id; ids not in the index are listed as not found."""
        deleted = await indexes.get(name).write(lambda index: index.delete(request.ids))
        return {"deleted": sorted(deleted), "not_found": sorted(set(request.ids) - set(deleted))}

    @app.get("/v1/indexes", tags=["indexes"])
    async def list_served() -> dict[str, Any]:
        """The served indexes and their document counts."""
        indexes.require_ready()
        counts = {name: await served.read(len) for name, served in indexes.served.items()}
        return {"indexes": [{"name": name, "documents": count} for name, count in counts.items()]}

    @app.get("/v1/indexes/{name}", tags=["indexes"])
    async def describe(name: str) -> dict[str, Any]:
        """An index's manifest (model, pooling, precision, vector structure...), document count and size."""
        return await indexes.get(name).read(lambda index: index.info())

    return app


def app_from_environment() -> FastAPI:
    """The app for uvicorn's worker processes, from the settings `searcher serve` put in the environment."""
    return create_app(ServerConfig.from_environment())


def run(config: ServerConfig, host: str, port: int, workers: int) -> None:
    """Serve until interrupted; every worker process loads the indexes and models once."""
    import uvicorn

    config.check()  # fail here, with one message, rather than in each worker
    if workers == 1:
        uvicorn.run(create_app(config), host=host, port=port, log_level="warning", server_header=False)
        return
    # Worker processes import the app by name and inherit the environment: the one way to hand them the
    # settings. The variable is set for as long as they run, and only in this process and its children.
    previous = os.environ.get(CONFIG_VARIABLE)
    os.environ[CONFIG_VARIABLE] = config.to_environment()
    try:
        uvicorn.run(
            "searcher.server:app_from_environment",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            server_header=False,
        )
    finally:
        if previous is None:
            os.environ.pop(CONFIG_VARIABLE, None)
        else:
            os.environ[CONFIG_VARIABLE] = previous


def _search(index: Index, options: SearchOptions, queries: list[str]) -> list[dict[str, Any]]:
    """QUERIES answered as `searcher query --json` answers one, embedded in one forward pass."""
    found = index.search_many(queries, options.k, options.mode, options.min_score, filters=options.filter)
    threshold = index.manifest.threshold(options.mode)
    return [
        search_response(index.name, query, options.mode, threshold, hits)
        for query, hits in zip(queries, found, strict=True)
    ]


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as {"error": message}: 4xx for the request's fault, 503 for the index's, never a stack trace."""

    @app.exception_handler(SearcherError)
    async def searcher_error(_: Request, error: SearcherError) -> JSONResponse:
        status = next((code for kind, code in CLIENT_ERRORS.items() if isinstance(error, kind)), 503)
        return JSONResponse({"error": str(error)}, status_code=status)

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


class BearerKey:
    """Requires `Authorization: Bearer KEY` on every path but the health checks, compared in constant time."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNPROTECTED_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                response = JSONResponse(
                    {"error": "missing or wrong API key: send Authorization: Bearer <key>"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
