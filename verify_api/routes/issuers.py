"""/v1/issuers/{address}: an issuer's public track record.

``track_record`` (verify_api/registry_acts.py) says, in plain words, what the issuer did to the cards it sold
through the escrow: the issuer runs redemption, so it can mark a sold card redeemed or revoke it, and every
such act is counted here from the indexed chain events.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from web3 import Web3

from verify_api.deps import client_info, rate_limit
from verify_api.errors import ApiError
from verify_api.jsonresp import JSONResponse
from verify_api.schemas import ERRORS, ErrorBody, IssuerAnswer

router = APIRouter(prefix="/v1/issuers", tags=["issuers"])

#: On-chain counts are summed from the registry's events for at most this many anchored batches.
MAX_BATCHES_ON_CHAIN = 200
_CACHE_TTL = 30.0
_cache: dict[tuple[str, str], tuple[float, dict]] = {}
_cache_lock = threading.Lock()


class TrackRecord(BaseModel):
    """The issuer's cards delivered in escrow orders, and what the issuer did to them afterwards."""

    orders: int | None = Field(description="Escrow orders the issuer delivered cards in.")
    cards_sold: int | None = Field(description="The issuer's cards delivered in escrow orders (open or settled).")
    revoked_in_open_orders: int | None = Field(
        description="Delivered cards the issuer revoked while their order was open (after delivery, before the "
                    "buyer confirmed, the release or a ruling). The escrow refunds them to the buyer at settlement.")
    redeemed_in_open_orders: int | None = Field(
        description="Delivered cards the issuer marked redeemed while their order was open: suspicious, the buyer "
                    "had not accepted them yet and the escrow pays the supplier for redeemed cards.")
    revoked_after_sale: int | None = Field(
        description="Delivered cards the issuer revoked after their order settled: a refund risk, the supplier "
                    "was paid already and the escrow no longer refunds the buyer.")
    redeemed_after_sale: int | None = Field(
        description="Delivered cards marked redeemed after their order settled: normal use (the buyer, or whoever "
                    "got the card, redeemed it), not a warning sign.")
    source: str = Field(description='Always "chain events": the registry\'s and the escrow\'s events as indexed.')
    chain_id: int | None
    indexed_to_block: int | None = Field(
        description="Events are counted up to this block; None (and every count None) when nothing is indexed.")


class IssuerAnswerWithRecord(IssuerAnswer):
    track_record: TrackRecord = Field(
        description="What the issuer did to the cards it sold in escrow orders. Each card counts once per kind "
                    "(revoked, redeemed), in the phase of its first such act; acts on cards never delivered in an "
                    "order are not counted.")


@router.get("/{address}", response_model=IssuerAnswerWithRecord,
            responses={**ERRORS, 404: {"model": ErrorBody, "description": "No batches from this issuer."}},
            summary="An issuer's public track record: batches, cards, revocations, redemptions")
async def get_issuer(address: Annotated[str, Path(max_length=64, description="0x address")],
                     request: Request) -> JSONResponse:
    deps = request.app.state.deps
    rate_limit(deps, "lookup", client_info(request, deps).hash, "lookup_rate")
    if not Web3.is_address(address):
        raise ApiError(422, "invalid_address", "not a valid 0x address")
    return JSONResponse(await run_in_threadpool(_issuer, deps, Web3.to_checksum_address(address)),
                        headers={"Cache-Control": "no-store"})


def _issuer(deps, address: str) -> dict:
    from verify_api.lookup import issuer_counts

    with deps.sessions() as session:
        counts = issuer_counts(session, address)
    onchain = deps.chain.issuer(address)
    has_role, name = onchain if onchain is not None else (None, "")
    if not counts["batches"] and not has_role and not name:
        raise ApiError(404, "issuer_not_found", "no batches from this issuer")
    anchored = [(bid, blk, False, n) for bid, blk, n in counts.pop("published")]
    record = {"address": address, "name": name or None, "name_source": "chain" if name else None,
              "batches": counts["batches"], "anchored_batches": counts["batches"], "cards": counts["cards"],
              "first_batch_at": counts["first_batch_at"]}
    record["on_chain"] = {"has_role": has_role, **_on_chain_counts(deps, address, anchored)}
    record["revoked_cards"] = record["on_chain"]["revoked_cards"]
    record["redeemed_cards"] = record["on_chain"]["redeemed_cards"]
    status = deps.chain.status()
    record["chain"] = status.to_json()
    record["track_record"] = _track_record(deps, status.chain_id, address)
    return record


def _track_record(deps, chain_id: int | None, address: str) -> dict:
    """From the indexed events of the chain the API reads (else the one chain indexed, if only one is)."""
    from sqlalchemy import select

    from verify_api.registry_acts import track_record
    from verify_api.storage.index_models import IndexCursor

    with deps.sessions() as session:
        if chain_id is None:
            ids = session.execute(select(IndexCursor.chain_id).limit(2)).scalars().all()
            chain_id = ids[0] if len(ids) == 1 else None
        return track_record(session, chain_id, address)


def _on_chain_counts(deps, address: str, anchored: list) -> dict:
    """Revoked and redeemed cards summed from the registry's events (cached briefly); None if unknown."""
    unknown = {"revoked_cards": None, "redeemed_cards": None}
    if not anchored or len(anchored) > MAX_BATCHES_ON_CHAIN:
        return {"revoked_cards": 0, "redeemed_cards": 0} if not anchored else unknown
    status = deps.chain.status()
    key = (status.registry or "", address)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and now - hit[0] < _CACHE_TTL:
            return hit[1]
    try:
        reg = deps.chain._ensure_registry()  # noqa: SLF001
        anchored = [(bid, blk, _revoked_on_chain(deps, bid, revoked), n) for bid, blk, revoked, n in anchored]
        counts = _count_events(reg, anchored)
    except Exception:  # noqa: BLE001 - the chain does not answer: say unknown
        return unknown
    with _cache_lock:
        _cache[key] = (now, counts)
    return counts


def _revoked_on_chain(deps, batch_id: str, db_revoked: bool) -> bool:
    b = deps.chain.batch(bytes.fromhex(batch_id[2:]))
    return bool(b.revoked) if b is not None and b.anchored else bool(db_revoked)


def _count_events(reg, anchored: list) -> dict:
    from chain.client import guard

    sig = {name: Web3.keccak(text=text).to_0x_hex() for name, text in (
        ("rev", "CardsRevoked(bytes32,uint256,uint256,uint16)"),
        ("red", "CardsRedeemed(bytes32,uint256,uint256,address)"))}
    ids = ["0x" + bid[2:].lower() for bid, *_ in anchored]
    start = min((blk or 0) for _bid, blk, *_ in anchored)
    logs = guard(lambda: reg.client.w3.eth.get_logs({
        "address": reg.address, "fromBlock": start, "toBlock": "latest",
        "topics": [[sig["rev"], sig["red"]], ids]}))
    revoked_batches = {bid.lower() for bid, _blk, revoked, _n in anchored if revoked}
    revoked = sum(n for bid, _blk, revoked, n in anchored if revoked)
    redeemed = 0
    for log in logs:
        bid = "0x" + bytes(log["topics"][1]).hex()
        mask = int.from_bytes(bytes(log["data"])[0:32], "big")  # the first non-indexed field of both
        if "0x" + bytes(log["topics"][0]).hex() == sig["rev"]:
            if bid not in revoked_batches:
                revoked += mask.bit_count()
        else:
            redeemed += mask.bit_count()
    return {"revoked_cards": revoked, "redeemed_cards": redeemed}
