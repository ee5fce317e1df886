"""/v1/batches/{batch_id}: a batch as the issuer recorded it and as the registry holds it."""

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
    from issuer.lookup import batch_record

    with deps.sessions() as session:
        rec = batch_record(session, batch_id)
    body = rec.to_json()
    b = deps.chain.batch(bytes.fromhex(rec.batch_id[2:]))
    body["on_chain"] = on_chain_json(b, rec.root)
    body["chain"] = deps.chain.status().to_json()
    return body
