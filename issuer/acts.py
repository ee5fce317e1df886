"""Every on-chain act of the supplier's side is a recorded intent (table ``chain_acts``), settled from the chain.

An act (anchor, revoke, redeem) is written before anything is sent; the signed transaction's hash and nonce are
stored *before* broadcast (``ChainClient.send``'s ``before_broadcast``). Its states:

    pending ──► broadcast ──► mined ──► final          (final: at least CARDPROOF_CONFIRMATIONS blocks on top)
       │            │           │
       └────────────┴───────────┴──► lost              (the chain does not hold it: dropped, or reorganised or
                                                         rolled back away: a rerun sends it again)
    failed: the transaction reverted.

Whatever state the database holds, :func:`observe` tells what the chain says about the act's transaction;
the kind-specific modules (``issuer.anchoring``, ``issuer.revocation``, ``issuer.redemption``) and
``issuer.reconcile`` then check the act's *effect* on chain (root anchored, bits set) and repair.

A live process driving an act holds a lease on it (``lease_until``, ``CARDPROOF_ACT_LEASE`` seconds, default
120): others leave a leased act alone (a concurrent redemption must not take the winner's in-flight claim for
one left by a crash). The process gives the lease back when it is done, or when it gives up waiting; a killed
process's lease simply expires.

These functions take a ``Session`` and never commit: the caller commits the act with the database change it
goes with (e.g. the cards' revoked flags with the revocation's receipt).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from chain.client import ChainClient, SentTx, guard
from issuer.storage.models import ChainAct, utcnow

OPEN_STATES = ("pending", "broadcast", "mined", "lost")
DEFAULT_LEASE_SECONDS = 120.0


def lease_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("CARDPROOF_ACT_LEASE", DEFAULT_LEASE_SECONDS)))
    except ValueError:
        return DEFAULT_LEASE_SECONDS


def _hex(value: Any) -> str:
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def payload_of(act: ChainAct) -> dict[str, Any]:
    try:
        return json.loads(act.payload or "{}")
    except ValueError:
        return {}


def begin(session: Session, kind: str, subject: str, payload: dict[str, Any], *, client: ChainClient,
          contract: str, reuse: tuple[str, ...] = ("pending", "broadcast", "lost")) -> ChainAct:
    """The act of this kind, subject and payload in one of the `reuse` states (a rerun resumes it), or a new
    pending one; leased. An act done once (a delivery) passes mined and final too, so that a rerun settles it."""
    text = dumps(payload)
    act = session.scalars(
        select(ChainAct).where(ChainAct.kind == kind, ChainAct.subject == subject, ChainAct.payload == text,
                               ChainAct.state.in_(reuse))
        .order_by(ChainAct.id.desc()).limit(1)
    ).first()
    if act is None:
        act = ChainAct(kind=kind, subject=subject, payload=text, state="pending", attempts=0,
                       chain_id=client.chain_id, contract=contract, account=client.address)
        session.add(act)
    act.lease_until = utcnow() + dt.timedelta(seconds=lease_seconds())
    session.flush()
    return act


def open_acts(session: Session, kind: str | None = None, subject: str | None = None) -> list[ChainAct]:
    """Acts not known final or failed, oldest first."""
    q = select(ChainAct).where(ChainAct.state.in_(OPEN_STATES))
    if kind is not None:
        q = q.where(ChainAct.kind == kind)
    if subject is not None:
        q = q.where(ChainAct.subject == subject)
    return list(session.scalars(q.order_by(ChainAct.id)))


def acts_for_kind(session: Session, kind: str) -> list[ChainAct]:
    return list(session.scalars(select(ChainAct).where(ChainAct.kind == kind).order_by(ChainAct.id)))


def acts_for(session: Session, subject: str) -> list[ChainAct]:
    return list(session.scalars(select(ChainAct).where(ChainAct.subject == subject).order_by(ChainAct.id)))


def by_tx(session: Session, tx_hash: str) -> ChainAct | None:
    return session.scalars(select(ChainAct).where(ChainAct.tx_hash == _hex(tx_hash))
                           .order_by(ChainAct.id.desc()).limit(1)).first()


def leased(act: ChainAct | None, now: dt.datetime | None = None) -> bool:
    """Whether a live process may still be driving this act."""
    return act is not None and act.lease_until is not None and act.lease_until > (now or utcnow())


def signed(act: ChainAct, sent: SentTx) -> None:
    """The transaction is signed and about to be broadcast: its hash and nonce, stored first."""
    act.tx_hash = _hex(sent.tx_hash)
    act.nonce = int(sent.nonce)
    act.attempts = int(act.attempts or 0) + 1
    act.state = "pending"
    act.block_number = act.block_hash = None
    act.last_error = None
    act.lease_until = utcnow() + dt.timedelta(seconds=lease_seconds())


def broadcast(act: ChainAct) -> None:
    if act.state == "pending":
        act.state = "broadcast"


def mined(act: ChainAct, client: ChainClient, receipt: Any | None, *, tx_hash: str | None = None) -> None:
    """Mined in `receipt`'s block (or, without a receipt, found done on chain): final past the depth."""
    if tx_hash:
        act.tx_hash = _hex(tx_hash)
    if receipt is not None:
        act.block_number = int(receipt["blockNumber"])
        act.block_hash = _hex(receipt["blockHash"])
    act.state = "final" if is_final(client, act.block_number) else "mined"
    act.last_error = None
    act.lease_until = None


def is_final(client: ChainClient, block_number: int | None) -> bool:
    if block_number is None:
        return client.confirmations == 0
    return client.block_number() - int(block_number) >= client.confirmations


def lost(act: ChainAct, why: str) -> None:
    act.state = "lost"
    act.block_number = act.block_hash = None
    act.last_error = why[:2000]


def failed(act: ChainAct, error: BaseException | str) -> None:
    act.state = "failed"
    act.last_error = " ".join(str(error).split())[:2000]
    act.lease_until = None


def release(act: ChainAct) -> None:
    act.lease_until = None


@dataclass(frozen=True)
class Seen:
    """What the chain says about an act's transaction."""

    status: str  # "none" (no transaction signed), "mined", "reverted", "in_mempool", "unknown"
    receipt: Any | None = None


def observe(client: ChainClient, act: ChainAct) -> Seen:
    """The chain's view of the act's transaction (mined receipts are checked against the canonical block)."""
    if not act.tx_hash:
        return Seen("none")
    receipt = client.get_receipt(act.tx_hash)
    if receipt is not None:
        # The receipt's block must still be the canonical one at that height.
        block = guard(lambda: client.w3.eth.get_block(int(receipt["blockNumber"])))
        if block is None or bytes(block["hash"]) != bytes(receipt["blockHash"]):
            return Seen("unknown")
        return Seen("mined" if int(receipt["status"]) == 1 else "reverted", receipt)
    if client.transaction_known(act.tx_hash):
        return Seen("in_mempool")
    return Seen("unknown")


def describe(act: ChainAct) -> dict[str, Any]:
    return {
        "id": act.id, "kind": act.kind, "subject": act.subject, "payload": payload_of(act), "state": act.state,
        "tx_hash": act.tx_hash, "nonce": act.nonce, "block_number": act.block_number, "attempts": act.attempts,
        "last_error": act.last_error,
    }
