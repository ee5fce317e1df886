"""The public pages: ``/`` and ``/c`` (the serial form), ``/c/{serial}`` (the page a phone opens from the card's
QR code). Server-rendered; they work without JavaScript. The order page is :mod:`verify_api.routes.orders`.

Every page is in the reader's language (Accept-Language, or the page's ``?lang=``: its language switch, plain
links to the same page) and says plainly when the chain is a test network (:mod:`verify_api.networks`). Its
``<main data-state>`` names what it shows (:func:`page_state`). A revoked or redeemed card's page says when, and
a revocation's reason, from the indexed registry events (:mod:`verify_api.card_acts`).

The serial form posts (``POST /c``), so that a secret code typed into it by mistake is in no URL; the answer is a
redirect to the card's page, and only for a valid serial. The one script, ``/static/codecheck.js`` (same origin,
a module), checks a typed code and opening against the leaf's commitment in the browser; the card page's policy
lets it run but lets nothing on the page connect anywhere or submit a form."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import re
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Path, Query, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse

from issuer.core.errors import InvalidSerial
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED, LEAF_VERSION
from verify_api.deps import client_info, rate_limit
from verify_api.card_acts import CardAct, card_act
from verify_api.errors import ApiError
from verify_api.i18n import LANGUAGES, choose, translator
from verify_api.networks import is_test_network
from verify_api.routes.cards import (
    SERIAL_DESCRIPTION,
    SERIAL_MAX_LENGTH,
    SERIAL_MIN_LENGTH,
    SERIAL_PATTERN,
)
from verify_api.service import canonical_serial, verify_and_record

log = logging.getLogger("cardproof.api.pages")

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
#: Characters a serial keeps in the page's own links (Crockford's check symbols *~$= are valid in a path).
SERIAL_SAFE = "-*~$="
#: The serial form's body is small; anything longer is not a serial.
FORM_MAX_BYTES = 1024
LANG_DESCRIPTION = "The page's language (one of " + ", ".join(LANGUAGES) + "); else Accept-Language decides."
#: Verdict (and its reason) -> the page's ``<main data-state>``.
_STATES = {"authentic": "authentic", "revoked": "revoked", "redeemed": "redeemed", "unknown": "unknown",
           "expired": "expired", "not_yet_anchored": "unanchored"}
_CHAIN_DOWN_REASONS = frozenset({"chain_unavailable", "status_unavailable"})


def env() -> Environment:
    global _env
    if _env is None:
        made = Environment(loader=FileSystemLoader(str(FilePath(__file__).resolve().parent.parent / "templates")),
                           autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
        # The language switch: every language by its own name.
        made.globals["languages"] = [(lang, translator(lang).language_name) for lang in LANGUAGES]
        _env = made
    return _env


def _page(name: str, status: int = 200, headers: dict[str, str] = SECURITY_HEADERS, **ctx) -> HTMLResponse:
    """Render a page. ``here`` (the page's own path) makes the language switch's links; ``state`` its
    ``<main data-state>``; ``chain_id`` a test network banner when it is not a production chain."""
    ctx.setdefault("here", "/")
    chain_id = ctx.pop("chain_id", None)
    if is_test_network(chain_id):
        ctx["testnet"] = ctx["t"]("testnet", chain=chain_id)
    html = env().get_template(name).render(**ctx)
    return HTMLResponse(html, status_code=status, headers=headers)


def page_lang(request: Request) -> str:
    """The page's language: its ``?lang=`` if supported, else Accept-Language."""
    return choose(request.query_params.get("lang"), request.headers.get("accept-language"))


def page_state(v: dict) -> str:
    """The ``data-state`` of a card's page: its verdict, "unanchored" for a batch not on chain (yet), and
    "chain_down" when the chain's silence is why nothing better can be said."""
    if v.get("reason") in _CHAIN_DOWN_REASONS:
        return "chain_down"
    return _STATES.get(v["verdict"], v["verdict"])


def _chain_id(v: dict) -> int | None:
    found = (v.get("chain") or {}).get("chain_id") or (v.get("batch") or {}).get("chain_id")
    return int(found) if isinstance(found, int) else None


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


def render_card(v: dict, lang: str, explorer: str | None, *, act: CardAct | None = None,
                here: str | None = None) -> HTMLResponse:
    """The card's page for answer ``v`` (GET /v1/cards/{serial}); ``act``: the event that revoked or redeemed
    it (:func:`find_card_act`)."""
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
    if act is not None and act.kind != v["verdict"]:
        act = None
    return _page("card.html", headers=CARD_SECURITY_HEADERS, t=t, v=v, known=known, chain_note=chain_note,
                 chain_line=chain_line, issuer_label=issuer_label, money=money, explorer=explorer,
                 codecheck=code_check(v) if known else None, act=act, state=page_state(v),
                 here=here or f"/c/{quote(v['serial'], safe=SERIAL_SAFE)}", chain_id=_chain_id(v),
                 first_scan=_parse_iso(v["fraud"]["first_scan_at"]), checked_at=_parse_iso(v["checked_at"]))


def find_card_act(sessions: Any, v: dict) -> CardAct | None:
    """The indexed event that revoked or redeemed the card of answer ``v``, when its verdict is one of those
    (blocking: one query). None when nothing is indexed, or the database does not answer: the page then
    gives no date rather than no page."""
    if v["verdict"] not in ("revoked", "redeemed"):
        return None
    chain_id, batch_id, index = _chain_id(v), v["batch"].get("id"), (v.get("proof") or {}).get("index")
    if chain_id is None or not batch_id or not isinstance(index, int):
        return None
    try:
        with sessions() as session:
            return card_act(session, chain_id, batch_id, index, v["verdict"])
    except Exception as exc:  # noqa: BLE001 - the verdict stands without its date
        log.warning("card act of %s not read: %s", v["serial"], type(exc).__name__)
        return None


@router.get("/c/{serial}", response_class=HTMLResponse, summary="The QR landing page of a card",
            responses={422: {"content": {"text/html": {"schema": {"type": "string"}}},
                             "description": "Not a valid serial (an HTML page saying so)."},
                       429: {"content": {"text/html": {"schema": {"type": "string"}}},
                             "description": "Rate limited (see Retry-After)."}})
async def card_page(serial: Annotated[str, Path(description=SERIAL_DESCRIPTION, json_schema_extra=SERIAL_SCHEMA)],
                    request: Request,
                    lang: Annotated[str | None, Query(description=LANG_DESCRIPTION)] = None) -> HTMLResponse:
    deps = request.app.state.deps
    lang = page_lang(request)
    here = f"/c/{quote(serial[:SERIAL_MAX_LENGTH], safe=SERIAL_SAFE)}"
    client = client_info(request, deps)
    try:
        rate_limit(deps, "lookup", client.hash, "lookup_rate")
    except ApiError as exc:
        resp = _page("invalid.html", status=429, t=translator(lang), state="rate_limited", here=here)
        resp.headers.update(exc.headers)
        return resp
    try:
        if len(serial) > SERIAL_MAX_LENGTH:
            raise InvalidSerial("too long")
        canon, display = canonical_serial(serial)
    except InvalidSerial:
        return _invalid_serial(lang, here)
    body = await verify_and_record(deps, canon, display, client, "page")
    act = None
    if body["verdict"] in ("revoked", "redeemed"):
        act = await run_in_threadpool(find_card_act, deps.sessions, body)
    return render_card(body, lang, deps.service.explorer_url, act=act)


def _invalid_serial(lang: str, here: str = "/") -> HTMLResponse:
    return _page("invalid.html", status=422, t=translator(lang), state="malformed", here=here)


def _form(request: Request) -> HTMLResponse:
    return _page("invalid.html", status=200, t=translator(page_lang(request)), form_only=True, state="form",
                 here=request.url.path)


def _card_url(serial: str, lang: str | None) -> str | None:
    """The card page's URL for a typed serial (in the page's language when one was chosen), or None when it is
    not a serial: the text then goes into no URL and is not echoed, as it may be a code typed into the wrong
    field."""
    try:
        if len(serial) > SERIAL_MAX_LENGTH:
            raise InvalidSerial("too long")
        _canon, display = canonical_serial(serial.strip())
    except InvalidSerial:
        return None
    chosen = choose(lang, None) if lang else None
    return f"/c/{display}" + (f"?lang={chosen}" if chosen and chosen.lower() == lang.strip().lower() else "")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def home(request: Request):
    """The serial form: check a card by its serial number (README.md, "Routes")."""
    return _form(request)


@router.get("/c", response_class=HTMLResponse, include_in_schema=False)
async def card_form(request: Request, serial: Annotated[str | None, Query(max_length=64)] = None):
    if not serial:
        return _form(request)
    url = _card_url(serial, request.query_params.get("lang"))
    if url is None:
        return _invalid_serial(page_lang(request), "/c")
    return RedirectResponse(url, status_code=303)


@router.post("/c", response_class=HTMLResponse, include_in_schema=False)
async def card_form_post(request: Request):
    """The serial form's submission (``application/x-www-form-urlencoded``: ``serial``, ``lang``)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX_BYTES:
            return _invalid_serial(page_lang(request), "/c")
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    except ValueError:
        fields = {}
    lang = (fields.get("lang") or [None])[0]
    serial = (fields.get("serial") or [""])[0]
    if not serial.strip():
        return _form(request)
    url = _card_url(serial, lang)
    if url is None:
        return _invalid_serial(choose(lang, request.headers.get("accept-language")), "/c")
    return RedirectResponse(url, status_code=303)
