"""/v1/orders/{id} and /o/{id}: an escrow order's state and its timeline (opened, funded, delivered,
disputed, released or refunded) with the amounts in token units and the transactions.

The page is in the reader's language (Accept-Language, or ``?lang=`` from its language switch), says so when the
escrow is on a test network, and once the order is settled (confirmed, released, resolved or refunded) shows its
total and when it settled, no longer money "in escrow" or a dispute window. Amounts are isolated left to right
(``<bdi dir="ltr">``) so that "9.50 tUSD" keeps its order in right-to-left pages."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from chain.errors import CardproofError
from verify_api.deps import client_info, rate_limit
from verify_api.errors import ApiError, error_code, http_status
from verify_api.i18n import translator
from verify_api.jsonresp import JSONResponse
from verify_api.order_view import parse_order_id
from verify_api.routes.pages import LANG_DESCRIPTION, _page, page_lang
from verify_api.schemas import ERRORS, ErrorBody

router = APIRouter(tags=["orders"])


OrderId = Annotated[str, Path(description="The escrow order id (a whole number).", max_length=100)]
NO_STORE = {"Cache-Control": "no-store"}
_STATUS_CLASS = {"funded": "info", "delivered": "info", "disputed": "warn", "confirmed": "ok", "released": "ok",
                 "resolved": "ok", "cancelled": "warn"}
#: Settled: the escrow holds nothing more for the order and no dispute can be raised.
SETTLED = frozenset({"confirmed", "released", "resolved", "cancelled"})
_SETTLING_STEPS = ("confirmed", "released", "resolved", "refunded")
#: Error code -> the page's ``<main data-state>``.
_ERROR_STATES = {"order_not_found": "unknown", "invalid_order_id": "malformed", "rate_limited": "rate_limited"}
_MARKS = {"funded": "…", "delivered": "…", "disputed": "!", "confirmed": "✓", "released": "✓", "resolved": "✓",
          "cancelled": "↩"}


def _orders(request: Request) -> Any:
    return request.app.state.orders


@router.get("/v1/orders/{order_id}", responses={**ERRORS, 404: {"model": ErrorBody, "description": "No such order."},
                                                503: {"model": ErrorBody, "description": "The chain is unreachable "
                                                      "or the escrow is not deployed."}},
            summary="An escrow order: state, amounts, delivery and the timeline of its transactions")
async def get_order(order_id: OrderId, request: Request) -> JSONResponse:
    deps = request.app.state.deps
    rate_limit(deps, "lookup", client_info(request, deps).hash, "lookup_rate")
    oid = parse_order_id(order_id)
    body = await run_in_threadpool(_orders(request).answer, oid)
    return JSONResponse(body, headers=NO_STORE)


# ---------------------------------------------------------------------------------------------- the page


def _amount(t: Any, money: dict[str, Any] | None, decimals: int) -> str:
    """``{"amount": "1234.50", ...}`` -> "1,234.50 tUSD" in the page's locale."""
    if not money:
        return ""
    from babel.numbers import format_decimal

    pattern = "#,##0" + ("." + "0" * min(2, decimals) + "#" * max(0, decimals - 2) if decimals > 0 else "")
    try:
        number = format_decimal(Decimal(money["amount"]), format=pattern, locale=t.locale, decimal_quantization=False)
    except Exception:  # noqa: BLE001 - never break the page over formatting
        number = money["amount"]
    return f"{number} {money.get('symbol') or ''}".strip()


def _duration(t: Any, seconds: int) -> str:
    from babel.dates import format_timedelta

    try:
        return format_timedelta(dt.timedelta(seconds=seconds), threshold=1.0, format="long", locale=t.locale)
    except Exception:  # noqa: BLE001
        return f"{seconds} s"


def _render(name: str, http_status: int, **ctx: Any) -> HTMLResponse:
    return _page(name, status=http_status, **ctx)


def settled_at(body: dict[str, Any]) -> int | None:
    """When a settled order settled: the time of its settling step in the timeline (None if not indexed)."""
    if body["status"] not in SETTLED:
        return None
    times = [s.get("time") for s in body.get("timeline") or () if s["step"] in _SETTLING_STEPS and s.get("time")]
    return max(times) if times else None


def render_order(body: dict[str, Any], lang: str) -> HTMLResponse:
    t = translator(lang)
    decimals = body["token"]["decimals"]

    def amount(money: dict[str, Any] | None) -> Markup:
        # Isolated left to right: "9.50 tUSD" keeps its order in right-to-left pages.
        text = _amount(t, money, decimals)
        return Markup('<bdi dir="ltr">{}</bdi>').format(text) if text else Markup("")

    status = body["status"]
    idx = body["indexer"]
    # The timeline is checked against the order's state on chain: warn only when steps are missing.
    if idx["complete"]:
        indexer_note = None
    elif idx["indexed_block"] is None:
        indexer_note = t("order.indexer.none")
    else:
        indexer_note = t("order.indexer.behind", indexed=idx["indexed_block"], head=idx["chain_block"])
    chain = body["chain"]
    chain_note = t("chain.stale", block=chain["block"]) if chain["state"] == "stale" else None
    detail = t(f"order.status.{status}.detail", time=t.datetime(body["dispute_window_end"]))
    return _render("order.html", 200, t=t, o=body, state=status, cls=_STATUS_CLASS.get(status, "info"),
                   mark=_MARKS.get(status, "…"), detail=detail, amount=amount, indexer_note=indexer_note,
                   chain_note=chain_note, chain_line=t("chain.live", block=chain["block"]),
                   settled=status in SETTLED, settled_at=settled_at(body), here=f"/o/{body['order_id']}",
                   chain_id=chain.get("chain_id"),
                   window=_duration(t, body["dispute_window"]), checked_at=dt.datetime.now(dt.UTC))


def _error_page(lang: str, status: int, code: str, order_id: str) -> HTMLResponse:
    here = f"/o/{quote(order_id, safe='')}"
    t = translator(lang)
    if code == "order_not_found":
        title, detail = t("order.not_found"), t("order.not_found.detail", id=order_id)
    elif code == "invalid_order_id":
        title, detail = t("order.invalid"), t("order.invalid.detail")
    elif code == "rate_limited":
        title, detail = t("order.busy"), t("order.busy.detail")
    else:
        title, detail = t("chain.unavailable"), t("order.unavailable.detail")
    return _render("order.html", status, t=t, error={"code": code, "title": title, "detail": detail}, here=here,
                   state=_ERROR_STATES.get(code, "chain_down"))


_HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}


@router.get("/o/{order_id}", response_class=HTMLResponse, summary="The page of an escrow order",
            responses={404: {**_HTML, "description": "No such order."},
                       422: {**_HTML, "description": "Not a valid order id."},
                       429: {**_HTML, "description": "Rate limited (see Retry-After)."},
                       503: {**_HTML, "description": "The chain is unreachable or the escrow is not deployed."}})
async def order_page(order_id: Annotated[str, Path(description="The escrow order id (a whole number).")],
                     request: Request,
                     lang: Annotated[str | None, Query(description=LANG_DESCRIPTION)] = None) -> HTMLResponse:
    # No max_length here: every malformed id gets the HTML page (parse_order_id rejects it), not a JSON 422.
    deps = request.app.state.deps
    lang = page_lang(request)
    try:
        rate_limit(deps, "lookup", client_info(request, deps).hash, "lookup_rate")
        oid = parse_order_id(order_id)
        body = await run_in_threadpool(_orders(request).answer, oid)
    except (ApiError, CardproofError) as exc:
        resp = _error_page(lang, http_status(exc), error_code(exc), order_id[:80])
        if isinstance(exc, ApiError):
            resp.headers.update(exc.headers)
        return resp
    return render_order(body, lang)
