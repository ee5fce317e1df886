"""Read side of the public database: a card with its leaf and Merkle proof, batches, issuers' counts.

Everything comes from published dumps (``verify_api.publish``); a card's leaf and proof are assembled from
the stored tiles by :mod:`verify_api.card_reader`. No code, no key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from issuer.core.leaf import CardLeaf
from verify_api.errors import ApiError
from verify_api.storage.models import PubBatch

__all__ = ["BatchRecord", "CardRecord", "StoreCorrupt", "batch_record", "find_card", "issuer_counts"]


class StoreCorrupt(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(503, "store_corrupt", message)


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    issuer_address: str
    sku: str
    face_value: int
    currency: str
    expiry: int
    code_form: int
    card_count: int
    root: str
    anchor_tx: str | None
    anchor_block: int | None
    anchored_at: int
    chain_id: int
    registry_address: str
    published_at: dt.datetime
    #: Kept for the verdict's interface: the public side knows no status but the chain's.
    state: str = "anchored"
    revoked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id, "issuer_address": self.issuer_address, "sku": self.sku,
            "face_value": self.face_value, "currency": self.currency, "expiry": self.expiry,
            "code_form": self.code_form, "card_count": self.card_count, "root": self.root,
            "anchor_tx": self.anchor_tx, "anchor_block": self.anchor_block, "anchored_at": self.anchored_at,
            "chain_id": self.chain_id, "registry_address": self.registry_address,
            "published_at": self.published_at.isoformat(),
        }


@dataclass(frozen=True)
class CardRecord:
    serial: str
    index: int
    leaf: CardLeaf
    proof: list[bytes]
    batch: BatchRecord
    #: The leaf's hash and the root its proof leads to, when the reader has already computed them.
    leaf_hash: bytes | None = None
    proven_root: bytes | None = None


def _batch_record(b: PubBatch) -> BatchRecord:
    return BatchRecord(
        batch_id=b.batch_id, issuer_address=b.issuer_address, sku=b.sku, face_value=int(b.face_value),
        currency=b.currency, expiry=int(b.expiry), code_form=int(b.code_form), card_count=b.card_count,
        root=b.root, anchor_tx=b.anchor_tx, anchor_block=b.anchor_block, anchored_at=int(b.anchored_at),
        chain_id=int(b.chain_id), registry_address=b.registry_address, published_at=b.published_at,
    )


def find_card(session: Session, canon: str) -> CardRecord | None:
    """The card with this canonical serial (no dashes), with its leaf and proof checked against the stored root;
    None if none is published. (Tools and tests; the service keeps a :class:`~verify_api.card_reader.CardReader`.)"""
    from verify_api.card_reader import CardReader

    return CardReader(session.get_bind()).read(canon)[0]


def batch_record(session: Session, batch_id: str) -> BatchRecord | None:
    b = session.scalar(select(PubBatch).where(PubBatch.batch_id == batch_id.lower()))
    return None if b is None else _batch_record(b)


def issuer_counts(session: Session, address: str) -> dict[str, Any]:
    """Published batches and cards of an issuer, and its published batches (id, anchor block, cards)."""
    n, cards, first = session.execute(
        select(func.count(), func.coalesce(func.sum(PubBatch.card_count), 0), func.min(PubBatch.anchored_at))
        .where(PubBatch.issuer_address == address)).one()
    batches = session.execute(select(PubBatch.batch_id, PubBatch.anchor_block, PubBatch.card_count)
                              .where(PubBatch.issuer_address == address)).all()
    return {"batches": int(n), "cards": int(cards),
            "first_batch_at": dt.datetime.fromtimestamp(first, dt.UTC).isoformat() if first else None,
            "published": [tuple(b) for b in batches]}
