"""The verification API: ``create_app()`` builds the FastAPI application.

Nothing is built at import time: engines, the chain connection, caches and background threads are
made in the lifespan, from ``settings`` (or the environment) and whatever ``deps`` the caller gives.

    uvicorn --factory verify_api.app:create_app      # or: cardproof serve
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.staticfiles import StaticFiles

from chain.settings import Settings
from verify_api.deps import AppDeps
from verify_api.errors import install_error_handlers
from verify_api.fastpath import CardFastPath
from verify_api.jsonresp import JSONResponse
from verify_api.metrics import MetricsMiddleware

log = logging.getLogger("cardproof.api")

__all__ = ["create_app"]

DESCRIPTION = """\
Verify card keys anchored by **cardproof**. Every answer carries what a third party needs to re-check
it against the chain without trusting this service: the batch's anchored Merkle root and coordinates
(chain id, registry, transaction, block), the card's leaf and Merkle proof, and the revocation and
redemption bits read from the registry (`cardproof verify` does exactly that).

Errors are JSON `{"error": {"code", "message"}}` with a stable `code`.
"""


def create_app(settings: Settings | None = None, *, deps: AppDeps | None = None) -> FastAPI:
    deps = deps if deps is not None else AppDeps()
    if settings is not None and deps.settings is None:
        deps.settings = settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(deps.resolve)
        app.state.deps = deps
        from verify_api.order_view import install as install_orders

        install_orders(app, deps)  # escrow orders (GET /v1/orders/{id}, /o/{id}); connects lazily
        await run_in_threadpool(deps.start)
        await deps.service.reader.open_async()
        if deps.api.tune_gc:
            import gc

            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 20)
        try:
            yield
        finally:
            await deps.service.reader.close_async()
            await run_in_threadpool(deps.close)

    # /docs (Swagger UI) loads its files from this service (fastapi-offline's, under /static-offline-docs), never
    # from a CDN: it works with no internet and tells no third party who reads it. No /redoc: ReDoc fetches its logo
    # from its vendor's CDN (tests/api/test_browser_states.py catches any page that fetches from elsewhere).
    app = FastAPIOffline(title="cardproof verification API", version="1.0", description=DESCRIPTION,
                         default_response_class=JSONResponse, lifespan=lifespan, redirect_slashes=False,
                         redoc_url=None)
    install_error_handlers(app)
    from verify_api.routes import batches, cards, deliveries, health, issuers, orders, pages

    for module in (cards, batches, issuers, orders, deliveries, pages, health):
        app.include_router(module.router)
    # The card page's own script (verify_api/static/codecheck.js); no third-party assets.
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.add_middleware(CardFastPath)  # inside the metrics middleware, which counts its requests too
    app.add_middleware(MetricsMiddleware)
    return app
