"""Builds the FastAPI app (``create_app``) and serves it with uvicorn (``serve``)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from fedrec_app.gateway import handlers
from fedrec_app.gateway.connections import ConnectionCollector, ConnectionGuard, guarded_protocol
from fedrec_app.gateway.middleware import RequestMiddleware
from fedrec_app.gateway.prometheus import GatewayMetrics
from fedrec_app.gateway.routes import movies, ops, predict, recommend
from fedrec_app.gateway.security import require_api_key
from fedrec_app.gateway.settings import GatewaySettings
from fedrec_app.gateway.store import ModelStore, watch

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# Swagger UI's and ReDoc's scripts and styles, installed with the gateway (fastapi-offline).
DOCS_STATIC = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS = "/docs-assets"
# The page's links to /docs and /openapi.json, left out when those are not served.
DOCS_LINKS_START, DOCS_LINKS_END = '<span id="api-docs">', "</span><!-- /api-docs -->"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """SIGHUP forces a reload; ``--watch`` polls the served folder for a new checkpoint."""
    store: ModelStore = app.state.store
    settings: GatewaySettings = app.state.settings
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Future[Any]] = set()  # only ever cancelled: results unread

    def on_sighup() -> None:
        log.info("SIGHUP: reloading the checkpoint")
        task = asyncio.ensure_future(asyncio.to_thread(store.reload, True))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        hup = True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        hup = False
    if settings.watch:
        tasks.add(asyncio.ensure_future(watch(store, settings.watch_interval)))
        log.info("watching %s every %.1fs", store.source, settings.watch_interval)
    try:
        yield
    finally:
        for task in list(tasks):
            task.cancel()
        if hup:
            loop.remove_signal_handler(signal.SIGHUP)


def create_app(settings: GatewaySettings, store: ModelStore | None = None) -> FastAPI:
    """The gateway app; loads (and verifies) the checkpoint now unless ``store`` is given."""
    store = store or ModelStore(settings.checkpoint, settings.verify_key, settings.allow_unsigned)
    # With API keys on, the API description is not handed to whoever asks (404) unless opened.
    docs = not settings.api_keys or settings.open_docs
    app = FastAPI(
        title="fedrec gateway",
        summary="Movie recommendations from a federated model, served with numpy",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served below from local files (FastAPI's own pages load a CDN)
        redoc_url=None,  # see install_docs
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = GatewayMetrics(store)
    handlers.install(app)
    # Without keys the dependency is left out altogether: no per-request cost, no OpenAPI scheme.
    protected = [Depends(require_api_key)] if settings.api_keys else []
    app.include_router(ops.open_router)
    for module in (recommend, predict, movies, ops):
        app.include_router(module.router, dependencies=protected)

    page = index_html(docs)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if docs:
        install_docs(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        RequestMiddleware, metrics=app.state.metrics, max_body_bytes=settings.max_body_bytes
    )
    return app


def index_html(docs: bool) -> str:
    """The web page; its links to the API description only when the gateway serves it
    (``docs``), else they would answer 404."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    if not docs:
        start = page.index(DOCS_LINKS_START)
        page = page[:start] + page[page.index(DOCS_LINKS_END, start) + len(DOCS_LINKS_END) :]
    return page


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) from files installed with the gateway (the ``fastapi-offline``
    package's copy of Swagger UI 5, under ``DOCS_ASSETS``), so that it renders with no network:
    FastAPI's default page loads its script from a CDN. No ``/redoc``: ReDoc fetches its logo
    from the vendor's CDN."""
    title = f"{app.title} · API"
    assets = DOCS_ASSETS

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=title,
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # no call to an online validator
        )

    app.mount(assets, StaticFiles(directory=DOCS_STATIC), name="docs-assets")


def serve(
    settings: GatewaySettings,
    host: str = "127.0.0.1",
    port: int = 8080,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    limits: ConnectionGuard | None = None,
) -> None:
    """Run one uvicorn worker (HTTPS when ``certfile``/``keyfile`` are given) until stopped.

    ``limits`` bounds connections per client address and in all, and the time to a complete
    request header (default: ``ConnectionGuard()``'s 64, 4096 and 10 s).
    """
    import uvicorn
    from threadpoolctl import threadpool_limits

    # Requests are small products run one at a time: BLAS threads only add hand-offs (on a busy
    # 2-core machine a fold-in went from about 2 ms to over 100 ms with them).
    threadpool_limits(limits=1, user_api="blas")
    app = create_app(settings)
    # The catalogue and framework objects live as long as the process: keep the cyclic garbage
    # collector from walking them again and again (shorter pauses, a steadier p99).
    gc.collect()
    gc.freeze()
    guard = limits or ConnectionGuard()
    app.state.metrics.registry.register(ConnectionCollector(guard))
    _raise_open_files_limit(guard.max_total)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        access_log=False,  # RequestMiddleware logs one line per request, with latency
        log_config=None,
        server_header=False,
        # The guard refuses connections over its caps at once, so uvicorn's own total
        # (which answers 503 to everyone once reached) is left off.
        http=guarded_protocol(guard),
        limit_concurrency=None,
        timeout_keep_alive=30,  # an idle connection between requests
    )
    scheme = "https" if certfile else "http"
    log.info(
        "gateway on %s://%s:%d (API keys %s; at most %s connections per client, %s in all; "
        "request headers within %s s)",
        scheme,
        host,
        port,
        "on" if settings.api_keys else "off",
        guard.max_per_client or "unlimited",
        guard.max_total or "unlimited",
        f"{guard.header_timeout:g}" if guard.header_timeout else "unlimited",
    )
    uvicorn.Server(config).run()


def _raise_open_files_limit(connections: int) -> None:
    """Lift the soft open-files limit towards ``connections`` plus headroom (up to the hard one).

    With the common soft limit of 1,024, accept() would fail (and the loop pause accepting)
    long before the connection cap is reached.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    want = connections + 256 if connections else hard
    if hard != infinite and want != infinite:
        want = min(want, hard)
    if soft != infinite and (want == infinite or want > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if connections and want != infinite and want < connections + 256:
        log.warning(
            "open-files limit %d is below --max-connections %d plus headroom: raise it "
            "(ulimit -n, or LimitNOFILE= in the unit)",
            want,
            connections,
        )
