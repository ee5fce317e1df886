"""/v1/cards/{serial}: verification. (Redemption needs the supplier's secrets: ``cardproof issuer serve``.)"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from verify_api.deps import client_info, rate_limit
from verify_api.jsonresp import JSONResponse
from verify_api.schemas import ERRORS, CardVerification
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
