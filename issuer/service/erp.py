"""The supplier's ERP API (``/v1/erp/*``): stock, mint jobs, orders, revocations, webhook deliveries.

Every route needs an ERP API key (``Authorization: Bearer cpk_...`` of a key created with role ``erp``; a
redeemer's key or a signed request is 403 ``forbidden``). The key is bound to one issuer: stock, mint jobs and
revocations are that issuer's; orders and webhooks are the supplier node's (one supplier per service).

Requests that create something (``POST /v1/erp/mint-jobs``, ``POST /v1/erp/revocations``) need an
``Idempotency-Key`` header (``issuer.idempotency``): repeated with the same body within 24 hours they answer the
first answer again (200, ``Idempotent-Replayed: true``); with another body 422 ``idempotency_conflict``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from chain.errors import CardproofError
from issuer import idempotency
from issuer.service.auth import Principal, authenticate
from issuer.service.errors import ServiceError, error_body, status_and_code
from issuer.service.erp_schemas import (
    ERP_ERRORS,
    IDEMPOTENT_ERRORS,
    MintJobOut,
    MintJobRequest,
    OrderList,
    OrderOut,
    RevocationOut,
    RevocationRequest,
    StockOut,
    WebhookDeliveryList,
    WebhookDeliveryOut,
)
from issuer.stock_listing import card_counts
from issuer.storage.models import Batch, Card, MintJob, NodeOrder, SealedDelivery

router = APIRouter(prefix="/v1/erp", tags=["erp"])

NO_STORE = {"Cache-Control": "no-store"}
#: Default of CARDPROOF_NODE_LOW_STOCK.
LOW_STOCK_DEFAULT = 100
IdempotencyKeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", max_length=300,
                                                    description="Required: 1-255 printable ASCII characters; the "
                                                                "same key and body within 24 h answer the same.")]


def _deps(request: Request) -> Any:
    return request.app.state.deps


async def erp_principal(request: Request) -> Principal:
    """The ERP key making the request (401 without a valid key, 403 for any other kind of credential)."""
    deps = _deps(request)
    body = await request.body()

    def check() -> Principal:
        with deps.sessions() as session:
            who = authenticate(session, request.headers, request.method, request.url.path, body, deps.limiter,
                               deps.service.signature_window)
        if who.kind != "api_key" or who.role != "erp":
            raise ServiceError(403, "forbidden", "the ERP API needs an ERP API key (api-key create --role erp)")
        deps.rate_limit("erp", who.ident, "erp_rate")
        return who

    return await run_in_threadpool(check)


Who = Annotated[Principal, Depends(erp_principal)]


def low_stock_threshold(home: Any = None) -> int:
    """CARDPROOF_NODE_LOW_STOCK, else ``low_stock`` (under ``[node]`` or at the top) of CARDPROOF_NODE_CONFIG,
    else 100 (the node's own setting, ``issuer.node.config``)."""
    raw: Any = os.environ.get("CARDPROOF_NODE_LOW_STOCK")
    if raw in (None, ""):
        from issuer.webhooks import load_node_config

        try:
            table = load_node_config(home=home)
            node = table.get("node") if isinstance(table.get("node"), dict) else {}
            raw = node.get("low_stock", table.get("low_stock"))
        except Exception:  # noqa: BLE001 - an unreadable file is the node's to report
            raw = None
    try:
        return max(0, int(raw)) if raw not in (None, "") else LOW_STOCK_DEFAULT
    except (TypeError, ValueError):
        return LOW_STOCK_DEFAULT


def _validation(exc: CardproofError) -> ServiceError:
    status, code = status_and_code(exc)
    return ServiceError(422 if status == 400 else status, code, " ".join(str(exc).split())[:300])


# --------------------------------------------------------------------------- stock


def _usable(session: Session, batch_pk: int) -> int:
    return session.scalar(select(func.count()).select_from(Card).where(
        Card.batch_pk == batch_pk, Card.revoked.is_(False), Card.redeemed_at.is_(None))) or 0


def stock(session: Session, issuer: str, threshold: int, now: int | None = None) -> dict[str, Any]:
    now = int(dt.datetime.now(dt.UTC).timestamp()) if now is None else now
    batches = list(session.scalars(select(Batch).where(Batch.issuer_address == issuer, Batch.revoked.is_(False),
                                                       Batch.state.in_(("minted", "anchoring", "anchored")))
                                   .order_by(Batch.id)))
    products: dict[tuple, dict[str, Any]] = {}
    for b in batches:
        expiry = int(b.expiry) if b.expiry else None
        key = (b.sku, int(b.face_value), b.currency, expiry)
        p = products.get(key)
        if p is None:
            p = products[key] = {
                "sku": b.sku,
                "face_value": {"amount": _amount(int(b.face_value), b.currency),
                               "minor": int(b.face_value), "currency": b.currency},
                "expiry": expiry, "expired": bool(expiry and expiry <= now), "available": 0, "pending": 0,
                "low": False, "batches": []}
        if b.state != "anchored":
            p["pending"] += _usable(session, b.id)
            continue
        # Counted as `cardproof stock` counts (issuer.stock_listing), from the database only.
        available = card_counts(session, b.id, b.batch_id, int(b.card_count), expired=p["expired"])["available"]
        p["available"] += available
        p["batches"].append({"batch_id": b.batch_id, "card_count": b.card_count, "available": available,
                             "anchored_at": b.anchored_at.isoformat() if b.anchored_at else None})
    out = sorted(products.values(), key=lambda p: (p["sku"], p["face_value"]["currency"], p["face_value"]["minor"],
                                                    p["expiry"] or 0))
    for p in out:
        p["low"] = not p["expired"] and p["available"] < threshold
    return {"issuer": issuer, "low_stock_threshold": threshold, "products": out}


def _amount(minor: int, currency: str) -> str:
    from issuer.products import format_face_value

    try:
        return format_face_value(minor, currency)
    except Exception:  # noqa: BLE001 - a currency babel does not know: minor units
        return str(minor)


@router.get("/stock", response_model=StockOut, responses=ERP_ERRORS,
            summary="Available cards per product (sku, face value, expiry), with their batches and a low flag")
async def get_stock(request: Request, who: Who) -> JSONResponse:
    """Counted from the supplier's database (never the chain): anchored batches' cards not revoked, redeemed,
    delivered or reserved for an escrow order. ``low``: fewer than CARDPROOF_NODE_LOW_STOCK (default 100)."""
    deps = _deps(request)

    def run() -> dict:
        with deps.sessions() as session:
            return stock(session, who.issuer, low_stock_threshold(getattr(deps.settings, "home", None)))

    return JSONResponse(await run_in_threadpool(run), headers=NO_STORE)


# --------------------------------------------------------------------------- idempotent creation


def _stored_error(exc: idempotency.StoredError) -> ServiceError:
    err = (exc.body or {}).get("error", {}) if isinstance(exc.body, dict) else {}
    return ServiceError(exc.status, err.get("code", "error"), err.get("message", "error"),
                        headers={"Idempotent-Replayed": "true"})


def _idempotent(deps: Any, who: Principal, method: str, path: str, key: str | None, body: dict,
                work: Any) -> tuple[int, Any, bool]:
    def status_of(exc: BaseException) -> int | None:
        if isinstance(exc, CardproofError):
            return status_and_code(exc)[0]
        return None

    def err_body(exc: BaseException) -> Any:
        status, code = status_and_code(exc)  # type: ignore[arg-type]
        return error_body(code, " ".join(str(exc).split())[:300])

    try:
        return idempotency.run_once(deps.sessions, who.ident, method, path, key, body, work, status_of, err_body)
    except idempotency.StoredError as exc:
        raise _stored_error(exc) from None
    except idempotency.IdempotencyError as exc:
        raise ServiceError(exc.status, exc.code, str(exc)) from None


def _answer(status: int, body: Any, replayed: bool) -> JSONResponse:
    headers = dict(NO_STORE)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=200 if replayed else status, headers=headers)


# --------------------------------------------------------------------------- mint jobs


@router.post("/mint-jobs", response_model=MintJobOut, status_code=201, responses={
    200: {"model": MintJobOut, "description": "The job of an earlier request with this Idempotency-Key."},
    **IDEMPOTENT_ERRORS}, summary="Mint (and anchor) a batch in the background")
async def create_mint_job(payload: MintJobRequest, request: Request, who: Who,
                          idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    deps = _deps(request)
    body = payload.model_dump()

    def work() -> tuple[int, Any]:
        from issuer.mint_jobs import create_job, job_json
        from issuer.products import check_currency, check_sku, parse_expiry, parse_face_value

        try:
            sku = check_sku(payload.sku)
            currency = check_currency(payload.currency)
            parse_face_value(payload.face_value, currency)
            parse_expiry(payload.expires)
        except CardproofError as exc:
            raise _validation(exc) from None
        with deps.sessions.begin() as session:
            job = create_job(session, who.issuer, sku=sku, face_value=payload.face_value, currency=currency,
                             count=payload.count, expires=payload.expires, anchor=payload.anchor,
                             api_key_id=who.ident)
            out = job_json(job)
        runner = getattr(request.app.state, "mint_jobs", None)
        if runner is not None:
            runner.submit(out["id"])
        return 201, out

    def run() -> tuple[int, Any, bool]:
        status, out, replayed = _idempotent(deps, who, "POST", "/v1/erp/mint-jobs", idempotency_key, body, work)
        if replayed and isinstance(out, dict) and "id" in out:  # the job as it is now
            out = _job(deps, who, int(out["id"]))
        return status, out, replayed

    return _answer(*await run_in_threadpool(run))


def _job(deps: Any, who: Principal, job_id: int) -> dict:
    from issuer.mint_jobs import job_json

    with deps.sessions() as session:
        job = session.get(MintJob, job_id)
        if job is None or job.issuer_address != who.issuer:
            raise ServiceError(404, "mint_job_not_found", f"no mint job {job_id}")
        return job_json(job)


@router.get("/mint-jobs/{job_id}", response_model=MintJobOut, responses={
    404: {"model": ERP_ERRORS[401]["model"], "description": "No such job (mint_job_not_found)."}, **ERP_ERRORS},
    summary="A mint job: state, progress, batch id, error")
async def get_mint_job(job_id: Annotated[int, Path(ge=1, le=2**62)], request: Request, who: Who) -> JSONResponse:
    deps = _deps(request)
    return JSONResponse(await run_in_threadpool(_job, deps, who, job_id), headers=NO_STORE)


# --------------------------------------------------------------------------- orders


def _order_json(o: NodeOrder, sealed_hash: str | None) -> dict[str, Any]:
    try:
        ranges = json.loads(o.ranges) if o.ranges else None
    except ValueError:
        ranges = None
    return {"order_id": o.order_id, "chain_id": o.chain_id, "escrow": o.escrow, "buyer": o.buyer,
            "product_id": o.product_id, "quantity": o.quantity, "min_expiry": o.min_expiry,
            "delivery_deadline": o.delivery_deadline, "state": o.state, "batch_id": o.batch_id, "ranges": ranges,
            "deliver_tx": o.deliver_tx, "sealed_hash": sealed_hash, "error": o.error,
            "created_at": o.created_at.isoformat(), "updated_at": o.updated_at.isoformat()}


def _orders_query():
    return select(NodeOrder, SealedDelivery.sealed_hash).outerjoin(SealedDelivery, and_(
        SealedDelivery.chain_id == NodeOrder.chain_id, SealedDelivery.escrow == NodeOrder.escrow,
        SealedDelivery.order_id == NodeOrder.order_id))


OrderState = Annotated[str | None, Query(pattern=r"^(seen|picked|delivered|published|out_of_stock|closed|failed)$",
                                         description="Only orders in this state.")]


@router.get("/orders", response_model=OrderList, responses=ERP_ERRORS,
            summary="The escrow orders the node fulfils, oldest first, by pages")
async def list_orders(request: Request, who: Who, state: OrderState = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100,
                      after: Annotated[int | None, Query(ge=0, le=2**62, description="The previous page's "
                                                                                        "next_after.")] = None
                      ) -> JSONResponse:
    deps = _deps(request)

    def run() -> dict:
        q = _orders_query()
        if state:
            q = q.where(NodeOrder.state == state)
        if after is not None:
            q = q.where(NodeOrder.id > after)
        with deps.sessions() as session:
            rows = session.execute(q.order_by(NodeOrder.id).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {"orders": [_order_json(o, h) for o, h in rows], "next_after": rows[-1][0].id if more else None}

    return JSONResponse(await run_in_threadpool(run), headers=NO_STORE)


@router.get("/orders/{order_id}", response_model=OrderOut, responses={
    404: {"model": ERP_ERRORS[401]["model"], "description": "No such order (order_not_found)."}, **ERP_ERRORS},
    summary="One escrow order (its sealed delivery's hash once sealed)")
async def get_order(order_id: Annotated[str, Path(pattern=r"^[0-9]{1,78}$", description="Decimal order id.")],
                    request: Request, who: Who,
                    escrow: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$",
                                                        description="The escrow, if several are served.")] = None
                    ) -> JSONResponse:
    deps = _deps(request)
    if escrow is not None:
        from chain.addresses import address_problem

        problem = address_problem(escrow)
        if problem is not None:
            raise ServiceError(422, "invalid_address", f"escrow: {problem}")

    def run() -> dict:
        q = _orders_query().where(NodeOrder.order_id == str(int(order_id)))
        if escrow:
            q = q.where(func.lower(NodeOrder.escrow) == escrow.lower())
        with deps.sessions() as session:
            row = session.execute(q.order_by(NodeOrder.id.desc()).limit(1)).first()
        if row is None:
            raise ServiceError(404, "order_not_found", f"no order {int(order_id)}")
        return _order_json(row[0], row[1])

    return JSONResponse(await run_in_threadpool(run), headers=NO_STORE)


# --------------------------------------------------------------------------- revocations

#: Cards one revocation by batch id may revoke (one transaction, one bitmap).
MAX_REVOKE = 10_000


@router.post("/revocations", response_model=RevocationOut, status_code=201, responses={
    200: {"model": RevocationOut, "description": "The answer of an earlier request with this Idempotency-Key."},
    404: {"model": ERP_ERRORS[401]["model"], "description": "No such card or batch (card_not_found, "
                                                             "batch_not_found)."},
    410: {"model": ERP_ERRORS[401]["model"], "description": "Revoked already (card_revoked)."},
    502: {"model": ERP_ERRORS[401]["model"], "description": "The chain refused it."},
    **IDEMPOTENT_ERRORS}, summary="Revoke cards (by serial, or a batch's cards neither revoked nor redeemed) on chain")
async def create_revocation(payload: RevocationRequest, request: Request, who: Who,
                            idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """Sent as recorded acts (``issuer.revocation``): one transaction per batch, settled by the reconciler if the
    answer is lost. A failure of the chain (5xx) releases the Idempotency-Key: retry with it."""
    deps = _deps(request)
    body = payload.model_dump()

    def work() -> tuple[int, Any]:
        from issuer.revocation import parse_reason, revoke_serials
        from issuer.storage import repository as repo

        try:
            reason = parse_reason(payload.reason)
        except CardproofError as exc:
            raise _validation(exc) from None
        with deps.sessions() as session:
            if payload.batch_id is not None:
                batch = session.scalars(select(Batch).where(Batch.batch_id == payload.batch_id.lower())
                                        ).one_or_none()
                if batch is None or batch.issuer_address != who.issuer:
                    raise ServiceError(404, "batch_not_found", f"no batch {payload.batch_id.lower()}")
                serials = list(session.scalars(select(Card.serial).where(Card.batch_pk == batch.id,
                                                                         Card.revoked.is_(False),
                                                                         Card.redeemed_at.is_(None))
                                               .order_by(Card.index).limit(MAX_REVOKE + 1)))
                if not serials:
                    raise ServiceError(410, "card_revoked", "every card of this batch is revoked already")
                if len(serials) > MAX_REVOKE:
                    raise ServiceError(422, "too_many_cards", f"a revocation covers at most {MAX_REVOKE} cards")
            else:
                serials = list(payload.serials or [])
                for s in serials:
                    card = repo.get_card_by_serial(session, s)  # CardNotFound 404, InvalidSerial 422
                    if card.batch.issuer_address != who.issuer:
                        raise ServiceError(403, "forbidden", "this key cannot revoke another issuer's cards")
        results = revoke_serials(deps.sessions, deps.acting_registry(), serials, reason)
        out = {"revoked": sum(len(r.indices) for r in results), "results": [r.to_json() for r in results]}
        return 201, out

    return _answer(*await run_in_threadpool(
        _idempotent, deps, who, "POST", "/v1/erp/revocations", idempotency_key, body, work))


# --------------------------------------------------------------------------- webhooks


@router.get("/webhooks", response_model=WebhookDeliveryList, responses=ERP_ERRORS,
            summary="Webhook deliveries (state: pending, delivered, dead, or failed = dead or retrying)")
async def list_webhooks(request: Request, who: Who,
                        state: Annotated[str | None, Query(pattern=r"^(pending|delivered|dead|failed)$")] = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 100,
                        after: Annotated[int | None, Query(ge=0, le=2**62)] = None) -> JSONResponse:
    from issuer.webhooks import delivery_json, list_deliveries

    deps = _deps(request)

    def run() -> dict:
        with deps.sessions() as session:
            rows = list_deliveries(session, state, limit + 1, after)
            more = len(rows) > limit
            rows = rows[:limit]
            return {"deliveries": [delivery_json(d, e) for d, e in rows],
                    "next_after": rows[-1][0].id if more else None}

    return JSONResponse(await run_in_threadpool(run), headers=NO_STORE)


@router.post("/webhooks/{delivery_id}/replay", response_model=WebhookDeliveryOut, responses={
    404: {"model": ERP_ERRORS[401]["model"], "description": "No such delivery (delivery_not_found)."},
    **ERP_ERRORS}, summary="Send a webhook delivery again now (a dead one too), with fresh attempts")
async def replay_webhook(delivery_id: Annotated[int, Path(ge=1, le=2**62)], request: Request,
                         who: Who) -> JSONResponse:
    from issuer.webhooks import replay

    deps = _deps(request)
    out = await run_in_threadpool(replay, deps.sessions, delivery_id)
    if out is None:
        raise ServiceError(404, "delivery_not_found", f"no webhook delivery {delivery_id}")
    return JSONResponse(out, headers=NO_STORE)
