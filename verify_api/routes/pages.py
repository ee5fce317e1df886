"""/c/{serial}: the page a phone opens from the card's QR code. Server-rendered, no JavaScript."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse

from issuer.core.errors import InvalidSerial
from verify_api.deps import client_info, rate_limit
from verify_api.errors import ApiError
from verify_api.i18n import negotiate, translator
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


def env() -> Environment:
    global _env
    if _env is None:
        from pathlib import Path as P

        _env = Environment(loader=FileSystemLoader(str(P(__file__).resolve().parent.parent / "templates")),
                           autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    return _env


def _page(name: str, status: int = 200, **ctx) -> HTMLResponse:
    html = env().get_template(name).render(**ctx)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


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
    return _page("card.html", t=t, v=v, known=known, chain_note=chain_note, chain_line=chain_line,
                 issuer_label=issuer_label, money=money, explorer=explorer,
                 first_scan=_parse_iso(v["fraud"]["first_scan_at"]), checked_at=_parse_iso(v["checked_at"]))


@router.get("/c/{serial}", response_class=HTMLResponse, summary="The QR landing page of a card",
            responses={422: {"content": {"text/html": {"schema": {"type": "string"}}},
                             "description": "Not a valid serial (an HTML page saying so)."},
                       429: {"content": {"text/html": {"schema": {"type": "string"}}},
                             "description": "Rate limited (see Retry-After)."}})
async def card_page(serial: Annotated[str, Path(description="The card's serial.")], request: Request) -> HTMLResponse:
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
        if len(serial) > 64:
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
