"""/v1/orders/{id}/delivery: the sealed delivery of an escrow order, put by its supplier and fetched by its buyer.

PUT takes the sealed blob (``application/octet-stream``) and keeps it only if its keccak256 is the hash the
escrow recorded with the delivery (``verify_api.sealed_store``); no account is needed, the chain authenticates the
blob. GET returns it with its hash (``X-Sealed-Hash``), for ``cardproof order receive`` to check against the chain
and open with the buyer's key. The service holds no key that opens it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from verify_api.deps import client_info, rate_limit
from verify_api.errors import ApiError
from verify_api.jsonresp import JSONResponse
from verify_api.order_view import parse_order_id
from verify_api.schemas import ERRORS, ErrorBody
from verify_api.sealed_store import MAX_SEALED_BYTES, load_sealed, store_sealed

router = APIRouter(tags=["orders"])

OrderId = Annotated[str, Path(description="The escrow order id (a whole number).", max_length=100)]


async def _body(request: Request) -> bytes:
    out = bytearray()
    async for chunk in request.stream():
        out += chunk
        if len(out) > MAX_SEALED_BYTES:
            raise ApiError(413, "sealed_delivery_too_large", f"a sealed delivery is at most {MAX_SEALED_BYTES} bytes")
    return bytes(out)


@router.put("/v1/orders/{order_id}/delivery",
             responses={**ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 413: {"model": ErrorBody}},
             summary="Store an order's sealed delivery, if its hash is the one the escrow recorded")
async def put_delivery(order_id: OrderId, request: Request) -> JSONResponse:
    deps = request.app.state.deps
    rate_limit(deps, "delivery", client_info(request, deps).hash, "delivery_rate")
    oid = parse_order_id(order_id)
    body = await _body(request)
    escrow = await run_in_threadpool(request.app.state.orders.escrow)
    stored = await run_in_threadpool(store_sealed, deps.sessions, escrow, oid, body)
    return JSONResponse(stored.to_json(), status_code=201 if stored.created else 200)


@router.get("/v1/orders/{order_id}/delivery",
            responses={**ERRORS, 404: {"model": ErrorBody, "description": "No sealed delivery is stored for it."}},
            response_class=Response,
            summary="An order's sealed delivery (ciphertext; check its hash against the escrow, open with your key)")
async def get_delivery(order_id: OrderId, request: Request) -> Response:
    deps = request.app.state.deps
    rate_limit(deps, "lookup", client_info(request, deps).hash, "lookup_rate")
    oid = parse_order_id(order_id)
    escrow = await run_in_threadpool(request.app.state.orders.escrow)
    row = await run_in_threadpool(load_sealed, deps.sessions, escrow.client.chain_id, escrow.address, oid)
    if row is None:
        raise ApiError(404, "sealed_delivery_not_found", f"no sealed delivery of order {oid} is stored here")
    return Response(bytes(row.blob), media_type="application/octet-stream",
                    headers={"X-Sealed-Hash": row.sealed_hash, "Cache-Control": "no-cache"})
