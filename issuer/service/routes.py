"""``POST /v1/cards/{serial}/redeem``, ``GET /healthz``, ``GET /readyz``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from issuer.core.serial import format_serial, parse_serial
from issuer.service.app import ServiceDeps
from issuer.service.auth import Principal, authenticate
from issuer.service.errors import ServiceError
from issuer.service.schemas import (
    REDEEM_ERRORS,
    Health,
    Readiness,
    RedeemRequest,
    RedeemResult,
)

router = APIRouter()

Serial = Annotated[str, Path(description="The card's serial, e.g. 0123-4567-89AB-CDEF-G (dashes, spaces and "
                                         "case are ignored).", max_length=64)]
NO_STORE = {"Cache-Control": "no-store"}


async def principal(request: Request) -> Principal:
    """Who makes the request (before its body or serial is even looked at), within its rate."""
    deps: ServiceDeps = request.app.state.deps
    body = await request.body()

    def check() -> Principal:
        with deps.sessions() as session:
            who = authenticate(session, request.headers, request.method, request.url.path, body, deps.limiter,
                               deps.service.signature_window)
        if who.role != "redeemer":
            raise ServiceError(403, "forbidden", "this API key is not a redeemer's key")
        deps.rate_limit("redeem", who.ident, "redeem_rate")
        return who

    return await run_in_threadpool(check)


@router.post("/v1/cards/{serial}/redeem", response_model=RedeemResult, responses=REDEEM_ERRORS, tags=["cards"],
             summary="Redeem a card with its code, exactly once (API key or signed request)")
async def redeem(serial: Serial, payload: RedeemRequest, request: Request,
                 who: Annotated[Principal, Depends(principal)]) -> JSONResponse:
    deps: ServiceDeps = request.app.state.deps
    display = format_serial(parse_serial(serial))  # InvalidSerial: 422
    result = await run_in_threadpool(_redeem, deps, who, display, payload.code)
    return JSONResponse(result, headers=NO_STORE)


def _redeem(deps: ServiceDeps, who: Principal, display: str, code: str) -> dict:
    from issuer.redemption import redeem_card
    from issuer.storage.repository import get_card_by_serial

    deps.rate_limit("card", display, "redeem_rate_serial")
    with deps.sessions() as session:
        issuer = get_card_by_serial(session, display).batch.issuer_address  # CardNotFound: 404
    if who.issuer is not None:
        if who.issuer.lower() != issuer.lower():
            raise ServiceError(403, "forbidden", "this API key cannot redeem this issuer's cards")
    elif who.ident.lower() != issuer.lower() and not deps.acting_registry().is_redeemer(issuer, who.ident):
        raise ServiceError(403, "forbidden", "the signer is neither the issuer nor one of its redeemers")
    # Wrong code 403, revoked 410, redeemed already 409: issuer.errors, answered by the error handler.
    return redeem_card(deps.sessions, deps.master_key, deps.acting_registry(), display, code,
                       who.redeemed_by).to_json()


@router.get("/healthz", response_model=Health, tags=["health"], summary="The process is up")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


#: Seconds each readiness check may take: /readyz answers within about that, whatever hangs.
CHECK_TIMEOUT = 2.0


async def _bounded(fn: Any, timeout: float = CHECK_TIMEOUT) -> Any:
    return await asyncio.wait_for(run_in_threadpool(fn), timeout)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}}, tags=["health"],
            summary="The database, the chain and (when configured) Redis are reachable")
async def readyz(request: Request) -> JSONResponse:
    """``database``: ok | unavailable; ``chain``: ok | unreachable (...); ``redis``: ok | unavailable |
    not_configured. Any of them down is ``not_ready`` (503): redemption needs all three (it fails closed
    without Redis: ``issuer.service.ratelimit``)."""
    deps: ServiceDeps = request.app.state.deps
    outage = getattr(request.app.state, "database_outage", None)
    out: dict[str, Any] = {"status": "ready", "database": "ok", "chain": "ok", "last_block": None,
                           "redis": "not_configured"}

    def check_db() -> str:
        try:
            with deps.sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001
            if outage is not None:
                outage.failed(exc, refused=False)
            return "unavailable"
        if outage is not None:
            outage.ok()
        return "ok"

    async def db() -> None:
        try:
            out["database"] = await _bounded(check_db)
        except TimeoutError:
            if outage is not None:
                outage.failed(f"no answer within {CHECK_TIMEOUT:g} s", refused=False)
            out["database"] = "unavailable"

    async def chain() -> None:
        try:
            out["last_block"] = await _bounded(lambda: deps.acting_registry().client.block_number())
        except TimeoutError:
            out["chain"] = f"unreachable (no answer within {CHECK_TIMEOUT:g} s)"
        except Exception as exc:  # noqa: BLE001
            out["chain"] = f"unreachable ({type(exc).__name__})"

    async def redis() -> None:
        limiter = deps.limiter
        if getattr(limiter, "backend", None) != "redis":
            return
        try:
            out["redis"] = "ok" if await _bounded(limiter.ping) else "unavailable"
        except TimeoutError:
            out["redis"] = "unavailable"

    await asyncio.gather(db(), chain(), redis())
    if out["database"] != "ok" or out["chain"] != "ok" or out["redis"] == "unavailable":
        out["status"] = "not_ready"
    return JSONResponse(out, status_code=200 if out["status"] == "ready" else 503, headers=NO_STORE)
