"""/c/{serial}: the page a phone opens from the card's QR code. Server-rendered; works without JavaScript.

The one script, ``/static/codecheck.js`` (same origin, a module), checks a typed code and opening against the
leaf's commitment in the browser; the page's policy lets it run but lets nothing on the page connect anywhere
or submit a form."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from pathlib import Path as FilePath
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse

from issuer.core.errors import InvalidSerial
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED, LEAF_VERSION
from verify_api.deps import client_info, rate_limit
from verify_api.errors import ApiError
from verify_api.i18n import negotiate, translator
from verify_api.routes.cards import (
    SERIAL_DESCRIPTION,
    SERIAL_MAX_LENGTH,
    SERIAL_MIN_LENGTH,
    SERIAL_PATTERN,
)
from verify_api.service import canonical_serial, verify_and_record

router = APIRouter(tags=["pages"])

_env: Environment | None = None

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Vary": "Accept-Language",
}
#: The card page runs its own module script (the code check) and nothing else. It submits no form and loads
#: no image, and connect-src (from default-src 'none') keeps any script from sending anything anywhere.
CARD_SECURITY_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
                               "form-action 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "require-trusted-types-for 'script'",
}
#: The serial's constraints, stated in the schema; the page itself enforces them (parse_serial and the length
#: check below) so that a bad serial gets the HTML page saying so, in the reader's language, not a JSON error.
SERIAL_SCHEMA = {"pattern": SERIAL_PATTERN, "minLength": SERIAL_MIN_LENGTH, "maxLength": SERIAL_MAX_LENGTH}
STATIC_DIR = FilePath(__file__).resolve().parent.parent / "static"
_COMMITMENT = re.compile(r"0x[0-9a-f]{64}")


def env() -> Environment:
    global _env
    if _env is None:
        _env = Environment(loader=FileSystemLoader(str(FilePath(__file__).resolve().parent.parent / "templates")),
                           autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    return _env


def _page(name: str, status: int = 200, headers: dict[str, str] = SECURITY_HEADERS, **ctx) -> HTMLResponse:
    html = env().get_template(name).render(**ctx)
    return HTMLResponse(html, status_code=status, headers=headers)


@functools.cache
def static_url(name: str) -> str:
    """``/static/<name>?v=<content hash>``: a changed file is never taken from a stale cache."""
    return f"/static/{name}?v={hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:16]}"


def code_check(v: dict) -> dict[str, str] | None:
    """What the in-browser code check needs from the answer (the leaf's commitment and code form), or None
    when the card's leaf is unknown or not one the script knows (version 2, code form exact or folded)."""
    leaf = (v.get("proof") or {}).get("leaf") or {}
    commitment, form = leaf.get("codeCommitment"), leaf.get("codeForm")
    if leaf.get("version") != str(LEAF_VERSION) or form not in (str(CODE_FORM_EXACT), str(CODE_FORM_FOLDED)):
        return None
    if not isinstance(commitment, str) or not _COMMITMENT.fullmatch(commitment):
        return None
    return {"commitment": commitment, "form": form, "script": static_url("codecheck.js")}


def _parse_iso(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def render_card(v: dict, lang: str, explorer: str | None) -> HTMLResponse:
    t = translator(lang)
    known = v["issuer"]["address"] is not None
    chain = v["chain"]
    if chain["state"] == "stale":
        chain_note = t("chain.stale", block=chain["last_block"])
    elif chain["state"] == "unavailable":
        chain_note = t("chain.unavailable")
    else:
        chain_note = None
    chain_line = t("chain.live", block=chain["last_block"]) if chain["state"] == "live" else ""
    issuer_label = v["issuer"]["name"] or v["issuer"]["address"] or ""
    money = t.money(v["product"]["face_value"], v["product"]["currency"]) if known else ""
    return _page("card.html", headers=CARD_SECURITY_HEADERS, t=t, v=v, known=known, chain_note=chain_note,
                 chain_line=chain_line, issuer_label=issuer_label, money=money, explorer=explorer,
                 codecheck=code_check(v) if known else None,
                 first_scan=_parse_iso(v["fraud"]["first_scan_at"]), checked_at=_parse_iso(v["checked_at"]))


@router.get("/c/{serial}", response_class=HTMLResponse, summary="The QR landing page of a card",
            responses={422: {"content": {"text/html": {"schema": {"type": "string"}}},
                             "description": "Not a valid serial (an HTML page saying so)."},
                       429: {"content": {"text/html": {"schema": {"type": "string"}}},
                             "description": "Rate limited (see Retry-After)."}})
async def card_page(serial: Annotated[str, Path(description=SERIAL_DESCRIPTION, json_schema_extra=SERIAL_SCHEMA)],
                    request: Request) -> HTMLResponse:
    deps = request.app.state.deps
    lang = negotiate(request.headers.get("accept-language"))
    client = client_info(request, deps)
    try:
        rate_limit(deps, "lookup", client.hash, "lookup_rate")
    except ApiError as exc:
        resp = _page("invalid.html", status=429, t=translator(lang))
        resp.headers.update(exc.headers)
        return resp
    try:
        if len(serial) > SERIAL_MAX_LENGTH:
            raise InvalidSerial("too long")
        canon, display = canonical_serial(serial)
    except InvalidSerial:
        return _page("invalid.html", status=422, t=translator(lang))
    body = await verify_and_record(deps, canon, display, client, "page")
    return render_card(body, lang, deps.service.explorer_url)


@router.get("/c", response_class=HTMLResponse, include_in_schema=False)
async def card_form(request: Request, serial: Annotated[str | None, Query(max_length=64)] = None):
    if serial:
        return RedirectResponse(f"/c/{quote(serial.strip(), safe='')}", status_code=303)
    lang = negotiate(request.headers.get("accept-language"))
    return _page("invalid.html", status=200, t=translator(lang), form_only=True)
