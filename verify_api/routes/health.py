"""/healthz, /readyz, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from verify_api.jsonresp import JSONResponse
from verify_api.metrics import render
from verify_api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}},
            summary="The database and the chain are reachable")
async def readyz(request: Request) -> JSONResponse:
    deps = request.app.state.deps

    def check() -> dict:
        out = {"status": "ready", "database": "ok", "chain": "ok", "last_block": None}
        try:
            with deps.sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001
            out["database"] = f"unreachable ({type(exc).__name__})"
        try:
            out["last_block"] = deps.chain.ping()
        except Exception as exc:  # noqa: BLE001
            out["chain"] = f"unreachable ({type(exc).__name__})"
        if out["database"] != "ok" or out["chain"] != "ok":
            out["status"] = "not_ready"
        return out

    out = await run_in_threadpool(check)
    return JSONResponse(out, status_code=200 if out["status"] == "ready" else 503,
                        headers={"Cache-Control": "no-store"})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    body, content_type = render(request.app.state.deps)
    return Response(body, media_type=content_type)


@router.get("/v1/ping", include_in_schema=False)
async def ping() -> JSONResponse:
    """A trivial JSON endpoint of the same app (the benchmark's baseline)."""
    return JSONResponse({"ok": True})
