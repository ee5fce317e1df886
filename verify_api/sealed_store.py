"""Sealed deliveries kept by the public service for the buyers of escrow orders.

The service cannot read a sealed delivery (it holds no key) and takes one only when the chain vouches for it: the
order must be delivered and the blob's keccak256 must be the sealed hash the escrow recorded with the delivery.
So nobody can plant a fake delivery, and whoever fetches one checks it against the chain the same way
(``cardproof order receive`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from issuer.core.sealed import SEALED_OVERHEAD, sealed_hash
from verify_api.errors import ApiError
from verify_api.storage.models import PubSealedDelivery

__all__ = ["MAX_SEALED_BYTES", "StoredSealed", "load_sealed", "store_sealed"]

#: Largest sealed delivery taken (a delivery of 65,535 cards seals to about 4 MiB).
MAX_SEALED_BYTES = 64 << 20


@dataclass(frozen=True)
class StoredSealed:
    chain_id: int
    escrow: str
    order_id: int
    sealed_hash: str
    size: int
    created: bool

    def to_json(self) -> dict[str, Any]:
        return {"order_id": str(self.order_id), "chain_id": self.chain_id, "escrow": self.escrow,
                "sealed_hash": self.sealed_hash, "bytes": self.size, "stored": True, "new": self.created}


def store_sealed(sessions: sessionmaker[Session], escrow: Any, order_id: int, blob: bytes) -> StoredSealed:
    """Keep ``blob`` as the sealed delivery of order ``order_id`` if the escrow recorded its hash (409 otherwise)."""
    if len(blob) <= SEALED_OVERHEAD:
        raise ApiError(422, "invalid_sealed_delivery", "the body is too short to be a sealed delivery")
    order = escrow.order(order_id)
    if not order.exists:
        raise ApiError(404, "order_not_found", f"there is no order {order_id} in the escrow")
    if not order.sealed_hash:
        raise ApiError(409, "order_not_delivered", f"order {order_id} has no delivery on chain yet")
    digest = sealed_hash(blob)
    if digest != order.sealed_hash:
        raise ApiError(409, "sealed_hash_mismatch",
                       f"the body's keccak256 is 0x{digest.hex()}, but the escrow recorded 0x{order.sealed_hash.hex()} "
                       f"for order {order_id}")
    chain_id, address, key = escrow.client.chain_id, escrow.address, str(order_id)
    hex_hash = "0x" + digest.hex()
    with sessions.begin() as session:
        row = session.get(PubSealedDelivery, (chain_id, address, key))
        created = row is None or row.sealed_hash != hex_hash
        if row is None:
            session.add(PubSealedDelivery(chain_id=chain_id, escrow=address, order_id=key, sealed_hash=hex_hash,
                                          blob=blob))
        elif created:  # the chain now records another delivery (the first was reorganised away): it wins
            row.sealed_hash, row.blob = hex_hash, blob
    return StoredSealed(chain_id, address, order_id, hex_hash, len(blob), created)


def load_sealed(sessions: sessionmaker[Session], chain_id: int, escrow: str, order_id: int) -> PubSealedDelivery | None:
    with sessions() as session:
        row = session.scalars(select(PubSealedDelivery).where(
            PubSealedDelivery.chain_id == chain_id, PubSealedDelivery.escrow == escrow,
            PubSealedDelivery.order_id == str(order_id))).one_or_none()
        if row is not None:
            session.expunge(row)
        return row
