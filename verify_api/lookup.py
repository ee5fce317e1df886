"""Read side of the public database: a card with its leaf and Merkle proof, batches, issuers' counts.

Everything comes from published dumps (``verify_api.publish``): leaves, and proofs assembled from the
stored tiles, reading only the O(log n) nodes on the card's path. No code, no key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from issuer.core.errors import InvalidProof
from issuer.core.leaf import LEAF_VERSION, CardLeaf, currency_to_bytes3, leaf_hash, sku_to_bytes32
from issuer.core.merkle import process_proof, proof_positions
from issuer.core.serial import format_serial, parse_serial
from verify_api.errors import ApiError
from verify_api.storage import repository as repo
from verify_api.storage.models import PubBatch, PubCard

__all__ = ["BatchRecord", "CardRecord", "StoreCorrupt", "batch_record", "find_card",
           "issuer_counts", "leaf_of"]


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
    #: The public side holds no status of its own: only the chain's bits count.
    db_revoked: bool = False
    db_redeemed_at: dt.datetime | None = None
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


def leaf_of(card: PubCard, batch: PubBatch) -> CardLeaf:
    return CardLeaf(
        LEAF_VERSION, bytes.fromhex(batch.batch_id[2:]), card.index, parse_serial(card.serial),
        sku_to_bytes32(batch.sku), int(batch.face_value), currency_to_bytes3(batch.currency), int(batch.expiry),
        int(batch.code_form), bytes(card.code_commitment),
    )


def _proof(session: Session, card: PubCard, batch: PubBatch, leaf: CardLeaf) -> list[bytes]:
    n_nodes = 2 * batch.card_count - 1
    positions = proof_positions(card.tree_pos, n_nodes)
    nodes = repo.load_nodes(session, batch.id, [card.tree_pos, *positions])
    expected = leaf_hash(leaf)
    root = bytes.fromhex(batch.root[2:])
    if card.tree_pos and nodes.get(card.tree_pos) != expected:
        raise StoreCorrupt(f"the stored tree of batch {batch.batch_id} does not hold card {card.serial}'s leaf")
    try:
        proof = [nodes[p] for p in positions]
        if process_proof(expected, proof) != root:
            raise InvalidProof("the proof does not reach the root")
    except (KeyError, InvalidProof):
        raise StoreCorrupt(f"the stored tree of batch {batch.batch_id} is corrupt") from None
    return proof


def find_card(session: Session, canon: str) -> CardRecord | None:
    """The card with this canonical serial (no dashes), with its leaf and proof; None if none is published."""
    found = repo.card_by_serial(session, canon)
    if found is None:
        return None
    card, batch = found
    leaf = leaf_of(card, batch)
    return CardRecord(serial=format_serial(leaf.serial), index=card.index, leaf=leaf,
                      proof=_proof(session, card, batch, leaf), batch=_batch_record(batch))


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
