"""/v1/cards/{serial}: verification. (Redemption needs the supplier's secrets: ``cardproof issuer serve``.)"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from issuer.core.serial import ALPHABET, CHECK_ALPHABET, SERIAL_SYMBOLS
from verify_api.deps import client_info, rate_limit
from verify_api.jsonresp import JSONResponse
from verify_api.schemas import ERRORS, CardVerification
from verify_api.service import canonical_serial, verify_and_record

router = APIRouter(prefix="/v1/cards", tags=["cards"])


def _symbols(chars: str) -> str:
    """A regex class of ``chars`` in both cases, plus Crockford's aliases I, L and O."""
    letters = sorted(set(chars + "ILO") - set("0123456789"))
    return "[0-9" + "".join(c + c.lower() if c.isalpha() else c for c in letters) + "]"  # $ * = ~ need no escape


#: What :func:`issuer.core.serial.parse_serial` accepts, as far as a regex can say it (not the check symbol's
#: value): surrounding whitespace, 16 symbols and a check symbol in any case with the aliases I L O, dashes,
#: spaces and tabs between them. A serial matching it with a wrong check symbol is still 422 invalid_serial.
SERIAL_PATTERN = (rf"^\s*[ \t-]*(?:{_symbols(ALPHABET)}[ \t-]*){{{SERIAL_SYMBOLS}}}{_symbols(CHECK_ALPHABET)}"
                  rf"[ \t-]*\s*$")
SERIAL_MIN_LENGTH = SERIAL_SYMBOLS + 1
SERIAL_MAX_LENGTH = 64
SERIAL_DESCRIPTION = ("The card's serial, e.g. 0123-4567-89AB-CDEF-G: 16 Crockford base32 symbols and a check "
                      "symbol; dashes, spaces and case are ignored, and I, L, O read as 1, 1, 0.")
#: The pattern and minimum length are stated in the schema and enforced by the route (parse_serial: 422
#: invalid_serial) after the rate limit, so that malformed serials count against it too (no free probing).
SERIAL_SCHEMA = {"pattern": SERIAL_PATTERN, "minLength": SERIAL_MIN_LENGTH}
Serial = Annotated[str, Path(description=SERIAL_DESCRIPTION, max_length=SERIAL_MAX_LENGTH,
                             json_schema_extra=SERIAL_SCHEMA)]
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/{serial}", response_model=CardVerification, responses=ERRORS,
            summary="Verify a card: verdict, issuer, product, batch anchor and Merkle proof")
async def get_card(serial: Serial, request: Request) -> JSONResponse:
    return await card_answer(request, serial)


async def card_answer(request: Request, serial: str) -> JSONResponse:
    """The answer of GET /v1/cards/{serial} (the route above, and its fast path: verify_api.fastpath)."""
    deps = request.app.state.deps
    client = client_info(request, deps)
    rate_limit(deps, "lookup", client.hash, "lookup_rate")
    canon, display = canonical_serial(serial)
    body = await verify_and_record(deps, canon, display, client, "lookup")
    return JSONResponse(body, headers=NO_STORE)
