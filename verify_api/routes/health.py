"""/healthz, /readyz, /metrics.

``/readyz`` answers within about :data:`CHECK_TIMEOUT` seconds whatever hangs: the database and the chain are
checked at once, each with that timeout.

* ``database``: ``ok`` or ``unavailable`` (then ``status: not_ready``, 503: lookups cannot be answered);
* ``chain``: ``ok`` or ``unreachable (...)`` (then ``not_ready``);
* ``redis``: ``ok``, ``unavailable`` or ``not_configured``. Redis down leaves the service ``ready``: lookups are
  still answered, with per-worker rate limits meanwhile (``verify_api.ratelimit``); the outage shows here and
  in ``/metrics`` (``cardproof_api_redis_available 0``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from verify_api.errors import database_outage, engine_of
from verify_api.jsonresp import JSONResponse
from verify_api.metrics import render
from verify_api.schemas import Health, Readiness

router = APIRouter(tags=["health"])

#: Seconds each readiness check may take.
CHECK_TIMEOUT = 2.0


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _bounded(fn: Any, timeout: float = CHECK_TIMEOUT) -> Any:
    """``fn()`` in a thread, or TimeoutError after ``timeout`` s (the thread is left to finish)."""
    return await asyncio.wait_for(run_in_threadpool(fn), timeout)


def database_check(deps: Any) -> str:
    outage = database_outage(engine_of(deps))
    try:
        with deps.sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        outage.failed(exc, refused=False)
        return "unavailable"
    outage.ok()
    return "ok"


def redis_state(limiter: Any) -> str:
    if getattr(limiter, "backend", None) != "redis":
        return "not_configured"
    return "ok" if limiter.available else "unavailable"


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}},
            summary="The database and the chain are reachable")
async def readyz(request: Request) -> JSONResponse:
    deps = request.app.state.deps
    out: dict[str, Any] = {"status": "ready", "database": "ok", "chain": "ok", "last_block": None,
                           "redis": "not_configured"}

    async def db() -> None:
        try:
            out["database"] = await _bounded(lambda: database_check(deps))
        except TimeoutError:
            database_outage(engine_of(deps)).failed(f"no answer within {CHECK_TIMEOUT:g} s", refused=False)
            out["database"] = "unavailable"

    async def chain() -> None:
        try:
            out["last_block"] = await _bounded(deps.chain.ping)
        except TimeoutError:
            out["chain"] = f"unreachable (no answer within {CHECK_TIMEOUT:g} s)"
        except Exception as exc:  # noqa: BLE001
            out["chain"] = f"unreachable ({type(exc).__name__})"

    async def redis() -> None:
        try:
            out["redis"] = await _bounded(lambda: redis_state(deps.limiter))
        except TimeoutError:
            out["redis"] = "unavailable"

    await asyncio.gather(db(), chain(), redis())
    if out["database"] != "ok" or out["chain"] != "ok":
        out["status"] = "not_ready"
    return JSONResponse(out, status_code=200 if out["status"] == "ready" else 503,
                        headers={"Cache-Control": "no-store"})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    body, content_type = await run_in_threadpool(render, request.app.state.deps)  # may ping Redis
    return Response(body, media_type=content_type)


@router.get("/v1/ping", include_in_schema=False)
async def ping() -> JSONResponse:
    """A trivial JSON endpoint of the same app (the benchmark's baseline)."""
    return JSONResponse({"ok": True})
