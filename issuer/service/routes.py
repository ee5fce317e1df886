"""``POST /v1/cards/{serial}/redeem``, ``GET /healthz``, ``GET /readyz``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from issuer.core.serial import format_serial, parse_serial
from issuer.service.app import ServiceDeps
from issuer.service.auth import Principal, authenticate
from issuer.service.errors import ServiceError
from issuer.service.schemas import REDEEM_ERRORS, Health, Readiness, RedeemRequest, RedeemResult

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


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}}, tags=["health"],
            summary="The database and the chain are reachable")
async def readyz(request: Request) -> JSONResponse:
    deps: ServiceDeps = request.app.state.deps

    def check() -> dict:
        out = {"status": "ready", "database": "ok", "chain": "ok", "last_block": None}
        try:
            with deps.sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001
            out["database"] = f"unreachable ({type(exc).__name__})"
        try:
            out["last_block"] = deps.acting_registry().client.block_number()
        except Exception as exc:  # noqa: BLE001
            out["chain"] = f"unreachable ({type(exc).__name__})"
        if out["database"] != "ok" or out["chain"] != "ok":
            out["status"] = "not_ready"
        return out

    out = await run_in_threadpool(check)
    return JSONResponse(out, status_code=200 if out["status"] == "ready" else 503, headers=NO_STORE)
