"""/v1/cards/{serial}: verification, code checks, redemption."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from verify_api.deps import client_info, rate_limit
from verify_api.errors import ApiError
from verify_api.jsonresp import JSONResponse
from verify_api.schemas import (
    ERRORS,
    CardVerification,
    CodeCheckRequest,
    CodeCheckResult,
    ErrorBody,
    RedeemRequest,
    RedeemResult,
)
from verify_api.service import canonical_serial, verify_and_record

router = APIRouter(prefix="/v1/cards", tags=["cards"])

Serial = Annotated[str, Path(description="The card's serial, e.g. 0123-4567-89AB-CDEF-G (dashes, spaces and "
                                         "case are ignored).", max_length=64)]
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/{serial}", response_model=CardVerification, responses=ERRORS,
            summary="Verify a card: verdict, issuer, product, batch anchor and Merkle proof")
async def get_card(serial: Serial, request: Request) -> JSONResponse:
    deps = request.app.state.deps
    client = client_info(request, deps)
    rate_limit(deps, "lookup", client.hash, "lookup_rate")
    canon, display = canonical_serial(serial)
    body = await verify_and_record(deps, canon, display, client, "lookup")
    return JSONResponse(body, headers=NO_STORE)


@router.post("/{serial}/check", response_model=CodeCheckResult, responses=ERRORS,
             summary="Check whether a code belongs to this card (counts as a verification attempt)")
async def check_card_code(serial: Serial, payload: CodeCheckRequest, request: Request) -> JSONResponse:
    deps = request.app.state.deps
    client = client_info(request, deps)
    rate_limit(deps, "check", client.hash, "check_rate_client")
    canon, display = canonical_serial(serial)
    rate_limit(deps, "check-serial", canon, "check_rate_serial")
    match = await run_in_threadpool(deps.service.check, canon, display, payload.code)
    deps.scans.record("check", canon, client=client.hash, ua=client.ua, ok=match, country=client.country)
    stats = await run_in_threadpool(deps.service.stats, canon)
    return JSONResponse({"serial": display, "match": match, "fraud": stats}, headers=NO_STORE)


_REDEEM_ERRORS = {
    **ERRORS,
    401: {"model": ErrorBody, "description": "No, or an invalid, API key or signature."},
    403: {"model": ErrorBody, "description": "Not allowed to redeem this issuer's cards, or wrong code."},
    404: {"model": ErrorBody, "description": "No such card."},
    409: {"model": ErrorBody, "description": "Already redeemed (or the batch is not anchored)."},
    410: {"model": ErrorBody, "description": "The card is revoked."},
    503: {"model": ErrorBody, "description": "The chain is unreachable."},
}


@router.post("/{serial}/redeem", response_model=RedeemResult, responses=_REDEEM_ERRORS,
             summary="Redeem a card (issuers' redeemers: API key or signed request)")
async def redeem(serial: Serial, payload: RedeemRequest, request: Request) -> JSONResponse:
    deps = request.app.state.deps
    canon, display = canonical_serial(serial)
    body = await request.body()
    client = client_info(request, deps)
    result = await run_in_threadpool(_redeem, deps, request, canon, display, payload.code, body)
    deps.scans.record("redeem", canon, client=client.hash, ua=client.ua, ok=True, country=client.country)
    return JSONResponse(result, headers=NO_STORE)


def _redeem(deps, request: Request, canon: str, display: str, code: str, body: bytes) -> dict:
    from issuer.errors import CardNotFound
    from issuer.redemption import redeem_card
    from issuer.storage.repository import get_card_by_serial
    from verify_api.auth import authenticate

    with deps.sessions() as session:
        principal = authenticate(session, request.headers, request.method, request.url.path, body, deps.limiter,
                                 deps.api.signature_window)
        rate_limit(deps, "redeem", principal.ident, "redeem_rate")
        try:
            card = get_card_by_serial(session, display)  # who issued it, and where it sits: no proof needed here
        except CardNotFound:
            raise ApiError(404, "card_not_found", "no such card") from None
        issuer, batch_id, index = card.batch.issuer_address, card.batch.batch_id_bytes, card.index
    if principal.issuer is not None:
        if principal.issuer.lower() != issuer.lower():
            raise ApiError(403, "forbidden", "this API key cannot redeem this issuer's cards")
    else:
        signer = principal.ident
        if signer.lower() != issuer.lower():
            if not deps.acting_registry().is_redeemer(issuer, signer):
                raise ApiError(403, "forbidden", "the signer is neither the issuer nor one of its redeemers")
    registry = deps.acting_registry()
    try:
        result = redeem_card(deps.sessions, deps.master_key, registry, display, code, principal.redeemed_by)
    finally:
        deps.service.forget(canon)
        deps.chain.poll()  # move the view past the redemption's block, so the words are read after it
        deps.chain.invalidate_card(batch_id, index)
    return result.to_json()
