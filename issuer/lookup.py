"""Read side for verification: a card with its leaf and Merkle proof, batches, issuers' track records.

Proofs are assembled from the stored heap array, reading only the O(log n) nodes on the card's path.
Nothing here decrypts a code; `check_code` compares keyed commitments in constant time, after reading the typed
code by its batch's rule (``issuer.codes.typed_code``: a generated code as its format intends, case, spaces,
dashes and Crockford's aliases ignored; an imported one exactly, or folded when it was imported so).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from issuer.codes import typed_code
from issuer.core import commitment
from issuer.core.commitment import derive_batch_keys, derive_opening
from issuer.core.errors import InvalidProof
from issuer.core.leaf import LEAF_VERSION, CardLeaf, currency_to_bytes3, sku_to_bytes32
from issuer.core.merkle import process_proof, proof_positions
from issuer.core.serial import format_serial, parse_serial
from issuer.errors import StorageError
from issuer.secrets_store import MasterKey
from issuer.storage import repository as repo
from issuer.storage.models import Batch, Card, Issuer


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    issuer_address: str
    issuer_name: str | None
    sku: str
    face_value: int
    currency: str
    expiry: int
    card_count: int
    root: str
    state: str
    anchor_tx: str | None
    anchor_block: int | None
    anchored_at: dt.datetime | None
    chain_id: int | None
    registry_address: str | None
    revoked: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id, "issuer_address": self.issuer_address, "issuer_name": self.issuer_name,
            "sku": self.sku, "face_value": self.face_value, "currency": self.currency, "expiry": self.expiry,
            "card_count": self.card_count, "root": self.root, "state": self.state, "anchor_tx": self.anchor_tx,
            "anchor_block": self.anchor_block,
            "anchored_at": self.anchored_at.isoformat() if self.anchored_at else None,
            "chain_id": self.chain_id, "registry_address": self.registry_address, "revoked": self.revoked,
        }


@dataclass(frozen=True)
class CardRecord:
    serial: str
    index: int
    leaf: CardLeaf
    proof: list[bytes]
    batch: BatchRecord
    db_revoked: bool
    db_redeemed_at: dt.datetime | None


def _issuer_name(session: Session, address: str) -> str | None:
    name = session.scalar(select(Issuer.name).where(Issuer.address == address))
    return name or None


def _batch_record(session: Session, batch: Batch) -> BatchRecord:
    return BatchRecord(
        batch_id=batch.batch_id, issuer_address=batch.issuer_address,
        issuer_name=_issuer_name(session, batch.issuer_address), sku=batch.sku, face_value=int(batch.face_value),
        currency=batch.currency, expiry=int(batch.expiry or 0), card_count=batch.card_count, root=batch.root,
        state=batch.state, anchor_tx=batch.anchor_tx, anchor_block=batch.anchor_block,
        anchored_at=batch.anchored_at, chain_id=batch.chain_id, registry_address=batch.registry_address,
        revoked=bool(batch.revoked),
    )


def batch_record(session: Session, batch_id: str | bytes) -> BatchRecord:
    return _batch_record(session, repo.get_batch(session, batch_id))


def leaf_of(card: Card, batch: Batch) -> CardLeaf:
    return CardLeaf(
        LEAF_VERSION, batch.batch_id_bytes, card.index, parse_serial(card.serial), sku_to_bytes32(batch.sku),
        int(batch.face_value), currency_to_bytes3(batch.currency), int(batch.expiry or 0), int(batch.code_form),
        bytes(card.code_commitment),
    )


def proof_of(session: Session, card: Card, batch: Batch, leaf: CardLeaf | None = None) -> list[bytes]:
    """The card's Merkle proof from the stored tree, checked against the batch root."""
    from issuer.core.leaf import leaf_hash

    n_nodes = 2 * batch.card_count - 1
    positions = proof_positions(card.tree_pos, n_nodes)
    nodes = repo.load_tree_nodes(session, batch.id, [card.tree_pos, *positions])
    proof = [nodes[p] for p in positions]
    expected_leaf = leaf_hash(leaf or leaf_of(card, batch))
    if nodes[card.tree_pos] != expected_leaf:
        raise StorageError(f"stored tree of batch {batch.batch_id} does not hold card {card.serial}'s leaf")
    try:
        if process_proof(expected_leaf, proof) != bytes.fromhex(batch.root[2:]):
            raise InvalidProof("proof does not reach the root")
    except InvalidProof:
        raise StorageError(f"stored tree of batch {batch.batch_id} is corrupt") from None
    return proof


def find_card(session: Session, serial_text: str) -> CardRecord:
    """The card with this serial (as typed), with its leaf and proof. InvalidSerial / CardNotFound."""
    return record_of(session, repo.get_card_by_serial(session, serial_text))


def record_of(session: Session, card: Card) -> CardRecord:
    """A loaded card (with its batch) as a CardRecord: its leaf, its proof from the stored tree, its batch."""
    batch = card.batch
    leaf = leaf_of(card, batch)
    return CardRecord(
        serial=format_serial(leaf.serial), index=card.index, leaf=leaf,
        proof=proof_of(session, card, batch, leaf), batch=_batch_record(session, batch),
        db_revoked=bool(card.revoked or batch.revoked), db_redeemed_at=card.redeemed_at,
    )


def open_key_of(master_key: MasterKey, batch: Batch) -> bytes:
    """The batch's opening key (HKDF of its batch secret, unwrapped with the master key)."""
    secret = master_key.unwrap_batch_secret(batch.batch_id_bytes, bytes(batch.secret_ct))
    return derive_batch_keys(secret)[0]


def opening_of(master_key: MasterKey, card: Card) -> bytes:
    """The opening of this (loaded) card: what its holder gets with the code to open the commitment."""
    return derive_opening(open_key_of(master_key, card.batch), card.index)


def code_matches(master_key: MasterKey, card: Card, code: str) -> bool:
    """Whether `code`, as typed, is the secret code of this (loaded) card (constant-time comparison of the
    commitment to the code read by the batch's rule)."""
    batch = card.batch
    return commitment.opens(typed_code(code, batch.code_format), opening_of(master_key, card), int(batch.code_form),
                            bytes(card.code_commitment))


def check_code(session: Session, master_key: MasterKey, serial_text: str, code: str) -> bool:
    """Whether `code` is the secret code of the card `serial_text` (constant-time comparison)."""
    return code_matches(master_key, repo.get_card_by_serial(session, serial_text), code)


def issuer_track_record(session: Session, address: str) -> dict[str, Any]:
    """Public counts from the database: batches, anchored batches, cards, revoked and redeemed cards."""
    address = repo.checksum_address(address)
    batches = session.execute(
        select(func.count(), func.coalesce(func.sum(Batch.card_count), 0)).where(Batch.issuer_address == address)
    ).one()
    anchored = session.scalar(
        select(func.count()).where(Batch.issuer_address == address, Batch.state == "anchored")) or 0
    revoked_batches_cards = session.scalar(
        select(func.coalesce(func.sum(Batch.card_count), 0)).where(Batch.issuer_address == address,
                                                                   Batch.revoked.is_(True))) or 0
    revoked_cards = session.scalar(
        select(func.count()).select_from(Card).join(Batch, Card.batch_pk == Batch.id)
        .where(Batch.issuer_address == address, Batch.revoked.is_(False), Card.revoked.is_(True))) or 0
    redeemed = session.scalar(
        select(func.count()).select_from(Card).join(Batch, Card.batch_pk == Batch.id)
        .where(Batch.issuer_address == address, Card.redeemed_at.is_not(None))) or 0
    first = session.scalar(select(func.min(Batch.created_at)).where(Batch.issuer_address == address))
    return {
        "address": address,
        "name": _issuer_name(session, address),
        "batches": int(batches[0]),
        "anchored_batches": int(anchored),
        "cards": int(batches[1]),
        "revoked_cards": int(revoked_cards) + int(revoked_batches_cards),
        "redeemed_cards": int(redeemed),
        "first_batch_at": first.isoformat() if first else None,
    }
