"""/v1/batches/{batch_id}: a published batch and the registry's record of it; PUT .../dump publishes one."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from verify_api.deps import client_info, rate_limit
from verify_api.errors import ApiError
from verify_api.jsonresp import JSONResponse
from verify_api.schemas import ERRORS, BatchAnswer, ErrorBody

router = APIRouter(prefix="/v1/batches", tags=["batches"])
_BATCH_ID = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


def on_chain_json(b, db_root: str | None) -> dict:
    if b is None:
        return {"anchored": None, "root": None, "root_matches": None, "issuer": None, "card_count": None,
                "anchored_at": None, "revoked": None, "revoke_reason": None}
    root = "0x" + b.root.hex() if b.anchored else None
    return {"anchored": b.anchored, "root": root,
            "root_matches": (root == (db_root or "").lower()) if b.anchored else None,
            "issuer": b.issuer if b.anchored else None, "card_count": b.card_count if b.anchored else None,
            "anchored_at": b.anchored_at or None, "revoked": b.revoked if b.anchored else None,
            "revoke_reason": b.revoke_reason if b.anchored else None}


@router.get("/{batch_id}", response_model=BatchAnswer,
            responses={**ERRORS, 404: {"model": ErrorBody, "description": "No such batch."}},
            summary="A batch: the issuer's record and the registry's")
async def get_batch(batch_id: Annotated[str, Path(max_length=80, description="0x + 64 hex digits")],
                    request: Request) -> JSONResponse:
    deps = request.app.state.deps
    rate_limit(deps, "lookup", client_info(request, deps).hash, "lookup_rate")
    if not _BATCH_ID.match(batch_id):
        raise ApiError(422, "invalid_batch_id", "a batch id is 0x followed by 64 hex digits")
    return JSONResponse(await run_in_threadpool(_batch, deps, batch_id), headers={"Cache-Control": "no-store"})


def _batch(deps, batch_id: str) -> dict:
    from verify_api.lookup import batch_record

    bid = "0x" + batch_id.lower().removeprefix("0x")
    with deps.sessions() as session:
        rec = batch_record(session, bid)
    if rec is None:
        raise ApiError(404, "batch_not_found", "no batch with this id is published here")
    body = rec.to_json()
    b = deps.chain.batch(bytes.fromhex(rec.batch_id[2:]))
    body["on_chain"] = on_chain_json(b, rec.root)
    body["chain"] = deps.chain.status().to_json()
    return body


#: Largest dump accepted (bytes, after decompression): about 1,000,000 cards.
MAX_DUMP_BYTES = 1 << 30


@router.put("/{batch_id}/dump", responses={**ERRORS, 409: {"model": ErrorBody}, 413: {"model": ErrorBody}},
            summary="Publish a batch: its OpenZeppelin standard-v1 dump, stored only if its root is the anchored one")
async def put_dump(batch_id: Annotated[str, Path(max_length=80, description="0x + 64 hex digits")],
                   request: Request) -> JSONResponse:
    """No account is needed: the chain authenticates the dump. The body is the dump's JSON (optionally
    ``Content-Encoding: gzip``); it is stored only if the registry holds this batch anchored with exactly this
    root over exactly this many cards."""
    deps = request.app.state.deps
    rate_limit(deps, "publish", client_info(request, deps).hash, "publish_rate")
    if not _BATCH_ID.match(batch_id):
        raise ApiError(422, "invalid_batch_id", "a batch id is 0x followed by 64 hex digits")
    body = await _read_body(request)
    return JSONResponse((await run_in_threadpool(_publish, deps, batch_id, body)).to_json())


async def _read_body(request: Request) -> bytes:
    import zlib

    gz = request.headers.get("content-encoding", "").lower() == "gzip"
    d = zlib.decompressobj(wbits=31) if gz else None
    out = bytearray()
    try:
        async for chunk in request.stream():
            out += d.decompress(chunk, MAX_DUMP_BYTES + 1 - len(out)) if d is not None else chunk
            if len(out) > MAX_DUMP_BYTES:
                raise ApiError(413, "dump_too_large", f"a dump is at most {MAX_DUMP_BYTES} bytes")
        if d is not None:
            out += d.flush()
    except zlib.error:
        raise ApiError(400, "invalid_gzip", "the body is not valid gzip") from None
    return bytes(out)


def _publish(deps, batch_id: str, body: bytes):
    import orjson

    from verify_api.publish import publish_dump

    try:
        dump = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not JSON") from None
    result = publish_dump(deps.sessions, deps.read_registry(), "0x" + batch_id.lower().removeprefix("0x"), dump)
    # The dump was checked at the chain's head; move the chain view there too (it reads at its last polled block,
    # which may predate the anchoring), then forget cached "unknown" answers for the new cards.
    deps.chain.poll()
    deps.service.clear()
    return result
