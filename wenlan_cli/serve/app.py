"""The ASGI application of `wenlan serve`: image search over an index as JSON and a page.

Routes (JSON answers; every refusal is a 4xx with ``{"error": "one sentence"}``):

    GET  /                 the search page (static files under /static/, nothing from elsewhere)
    GET  /healthz          {"status": "ok"}; with the index's size, generation and checkpoint
                           when the caller may search
    GET  /search?q=...&k=  text -> images
    POST /search/image?k=  an uploaded image (multipart field "file") -> images
    GET  /images/{id}      a JPEG thumbnail of an indexed image

Results name images by their path relative to the images folder and a stable id; no
absolute path leaves the server. The model and the index are loaded once, in
`create_app`; queries go through one `MicroBatcher`, and the index is swapped
atomically when `wenlan index` updates it (`LiveIndex`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import DataError
from .batching import BatcherBusy, MicroBatcher
from .engine import ImageJob, Ranked, TextJob, prepare_upload, run_batch
from .live_index import LiveIndex, Snapshot
from .security import Refusal, SecurityHeaders, check_token, file_inside
from .thumbnails import ThumbnailCache
from .uploads import read_upload

__all__ = ["ServeSettings", "create_app"]

_ID = re.compile(r"^[0-9a-f]{16}$")
_STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class ServeSettings:
    """Everything `wenlan serve` can set; the defaults are the safe ones."""

    index: Path
    checkpoint: str | None = None
    device: str = "cpu"
    token: str | None = None  # None: no Authorization needed
    max_query_chars: int = 200
    default_k: int = 20
    max_k: int = 100
    max_upload_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    reload_interval: float = 2.0  # seconds between looks at index.json; 0: never reload
    batch_size: int = 32
    batch_wait: float = 0.002  # seconds a batch waits for more queries
    max_pending: int = 1024  # queued queries before 503
    thumbnail_size: int = 256


def _static_file(name: str) -> bytes:
    return resources.files("wenlan_cli.serve").joinpath("static", name).read_bytes()


def _parse_k(raw: str | None, settings: ServeSettings) -> int:
    if raw is None or raw == "":
        return min(settings.default_k, settings.max_k)
    if not raw.isdigit() or not 1 <= int(raw) <= settings.max_k:
        raise Refusal(400, f"k must be a whole number from 1 to {settings.max_k}, not {raw[:20]!r}.")
    return int(raw)


def _parse_query(raw: str | None, settings: ServeSettings) -> str:
    text = (raw or "").strip()
    if not text:
        raise Refusal(400, "give a text to search for in the parameter q.")
    if len(text) > settings.max_query_chars:
        raise Refusal(400, f"the query is {len(text)} characters long; this server accepts at most {settings.max_query_chars}.")
    return text


def _answer(query: str, kind: str, k: int, snapshot: Snapshot, ranked: Ranked) -> dict:
    rows = snapshot.index.rows
    return {
        "query": query,
        "kind": kind,
        "k": k,
        "generation": snapshot.generation,
        "images": len(rows),
        "results": [
            {"rank": rank, "score": score, "id": snapshot.ids[row], "path": rows[row].path,
             "thumbnail": f"/images/{snapshot.ids[row]}"}
            for rank, (score, row) in enumerate(zip(ranked.scores, ranked.rows), start=1)
        ],
    }


def _describe(live: LiveIndex, batcher: MicroBatcher) -> dict:
    snapshot = live.current
    recorded = snapshot.index.checkpoint
    loaded = snapshot.loaded
    return {
        "status": "ok",
        "images": len(snapshot.index),
        "dim": snapshot.index.dim,
        "generation": snapshot.generation,
        "updated": snapshot.index.info.get("updated"),
        "checkpoint": {
            "name": Path(str(loaded.path)).name,
            "model": loaded.config.name,
            "sha256": str(recorded.get("model_sha256") or "")[:12],
        },
        "reloads": live.reloads,
        "reload_error": live.last_error,
        "recent_batch_sizes": batcher.batch_sizes[-16:],
    }


def _lifespan(settings: ServeSettings, live: LiveIndex, batcher: MicroBatcher):
    """The app's lifespan: a task that reloads the index when `wenlan index` commits a new
    generation (unless `reload_interval` is 0), and the batcher drained at shutdown."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(settings.reload_interval)
            if live.changed():
                await run_in_threadpool(live.refresh)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        watcher = asyncio.create_task(watch()) if settings.reload_interval > 0 else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await batcher.aclose()

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal as JSON `{"error": one sentence}`, never the framework's own shapes."""

    @app.exception_handler(Refusal)
    async def refused(_request: Request, exc: Refusal) -> JSONResponse:
        return JSONResponse({"error": exc.sentence}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        sentences = {404: f"there is nothing at {request.url.path}.",
                     405: f"{request.method} is not allowed at {request.url.path}."}
        sentence = sentences.get(exc.status_code, f"{exc.detail}".rstrip(".") + ".")
        return JSONResponse({"error": sentence}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body"))
        return JSONResponse({"error": f"the parameter {where or 'given'} is not valid ({first.get('msg', 'bad value')})."},
                            status_code=400)

    @app.exception_handler(BatcherBusy)
    async def busy(_request: Request, exc: BatcherBusy) -> JSONResponse:
        return JSONResponse({"error": f"the server is busy ({exc}); try again shortly."}, status_code=503,
                            headers={"Retry-After": "1"})


def _add_page_routes(app: FastAPI) -> None:
    """The search page and its static files, read once and served from memory."""
    page = _static_file("page.html")
    static = {name: _static_file(name) for name in _STATIC}

    @app.get("/", include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in static:
            raise Refusal(404, f"there is no static file {name[:40]!r}.")
        return Response(static[name], media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})


def _add_search_routes(app: FastAPI, settings: ServeSettings, live: LiveIndex, batcher: MicroBatcher) -> None:
    """Health and the two searches; each query is answered on the snapshot of the index
    current when it arrived, so a reload mid-request never mixes two generations."""

    @app.get("/healthz")
    async def healthz(request: Request) -> dict:
        try:
            check_token(request.headers.get("authorization"), settings.token)
        except Refusal:
            return {"status": "ok"}  # alive, but the index's details are for token holders
        return _describe(live, batcher)

    @app.get("/search")
    async def search_text(request: Request) -> dict:
        check_token(request.headers.get("authorization"), settings.token)
        params = request.query_params
        text = _parse_query(params.get("q"), settings)
        k = _parse_k(params.get("k"), settings)
        snapshot = live.current
        ranked = await batcher.submit(TextJob(text, k, snapshot))
        return _answer(text, "text", k, snapshot, ranked)

    @app.post("/search/image")
    async def search_image(request: Request) -> dict:
        check_token(request.headers.get("authorization"), settings.token)
        k = _parse_k(request.query_params.get("k"), settings)
        data = await read_upload(request, settings.max_upload_bytes)
        snapshot = live.current
        try:
            pixels, boxes = await run_in_threadpool(prepare_upload, data, snapshot, settings.max_image_pixels)
        except DataError as exc:
            raise Refusal(422, str(exc)) from None
        ranked = await batcher.submit(ImageJob(pixels, boxes, k, snapshot))
        return _answer("(uploaded image)", "image", k, snapshot, ranked)


def _add_thumbnail_route(app: FastAPI, settings: ServeSettings, live: LiveIndex) -> None:
    """Thumbnails by stable id only: a path from the client never reaches the file system,
    and a manifest path that resolves outside the images folder is refused."""
    thumbnails = ThumbnailCache(size=settings.thumbnail_size, max_pixels=settings.max_image_pixels)

    @app.get("/images/{image_id}")
    async def thumbnail(image_id: str, request: Request) -> Response:
        check_token(request.headers.get("authorization"), settings.token)
        snapshot = live.current
        row = snapshot.by_id.get(image_id) if _ID.match(image_id) else None
        if row is None:
            raise Refusal(404, f"no image of the index has the id {image_id[:40]!r}.")
        relative = snapshot.index.rows[row].path
        path = file_inside(snapshot.index.images_dir, relative)
        if path is None:
            raise Refusal(404, f"the image {relative!r} is not a file inside the images folder.")
        try:
            data = await run_in_threadpool(thumbnails.get, path)
        except (DataError, OSError):
            raise Refusal(404, f"the image {relative!r} cannot be read.") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


def create_app(settings: ServeSettings, live: LiveIndex | None = None) -> FastAPI:
    """The application; loads the index and its model now (raises WenlanError when it cannot)."""
    live = live or LiveIndex(settings.index, checkpoint=settings.checkpoint, device=settings.device)
    batcher = MicroBatcher(run_batch, max_batch=settings.batch_size, max_wait=settings.batch_wait,
                           max_pending=settings.max_pending)
    app = FastAPI(title="wenlan serve", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=_lifespan(settings, live, batcher))
    app.add_middleware(SecurityHeaders)
    app.state.live = live
    app.state.batcher = batcher
    app.state.settings = settings
    _add_error_handlers(app)
    _add_page_routes(app)
    _add_search_routes(app, settings, live, batcher)
    _add_thumbnail_route(app, settings, live)
    return app
