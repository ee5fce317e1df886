"""Revoke cards (leaked, fraudulent, recalled) on chain, then record it in the database."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from chain.registry import Registry
from issuer.anchoring import NotBatchIssuer
from issuer.core.serial import canonical_serial
from issuer.errors import CardRevoked, InvalidBatchState, IssuerError
from issuer.storage import repository as repo


class RevokeReason(IntEnum):
    """Reason codes recorded on chain with a revocation."""

    UNSPECIFIED = 0
    LEAKED = 1
    FRAUD = 2
    RECALLED = 3
    DAMAGED = 4


class InvalidReason(IssuerError, ValueError):
    """Unknown revocation reason."""

    code = "invalid_reason"


def parse_reason(text: str | int) -> RevokeReason:
    if isinstance(text, int) or str(text).isdigit():
        try:
            return RevokeReason(int(text))
        except ValueError:
            pass
    else:
        try:
            return RevokeReason[str(text).strip().upper()]
        except KeyError:
            pass
    names = ", ".join(r.name.lower() for r in RevokeReason)
    raise InvalidReason(f"unknown revocation reason {str(text)!r}: use one of {names}")


@dataclass(frozen=True)
class RevokeResult:
    batch_id: str
    serials: list[str]
    indices: list[int]
    reason: int
    tx_hash: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def revoke_serials(sessions: sessionmaker[Session], registry: Registry, serials: list[str],
                   reason: RevokeReason) -> list[RevokeResult]:
    """Revoke cards by serial: one transaction per batch. Validates everything before sending anything."""
    by_batch: dict[str, dict[int, str]] = defaultdict(dict)  # batch id -> card index -> display serial
    batch_pks: dict[str, int] = {}
    with sessions() as session:
        for text in serials:
            card = repo.get_card_by_serial(session, text)
            batch = card.batch
            serial = canonical_serial(card.serial)
            if batch.state != "anchored":
                raise InvalidBatchState(batch.batch_id, batch.state, "anchored",
                                        detail="only cards of anchored batches can be revoked")
            if batch.issuer_address != registry.client.address:
                raise NotBatchIssuer(f"card {serial} belongs to issuer {batch.issuer_address}, "
                                     f"not {registry.client.address}")
            if card.revoked or batch.revoked:
                raise CardRevoked(serial, card.revoke_reason if card.revoked else batch.revoke_reason)
            by_batch[batch.batch_id][card.index] = serial
            batch_pks[batch.batch_id] = batch.id
    results = []
    for batch_id, entries in by_batch.items():
        indices = sorted(entries)
        receipt = registry.revoke_cards(bytes.fromhex(batch_id[2:]), indices, int(reason))
        with sessions.begin() as session:
            repo.mark_cards_revoked(session, batch_pks[batch_id], indices, int(reason))
        results.append(RevokeResult(batch_id, [entries[i] for i in indices], indices, int(reason),
                                    "0x" + bytes(receipt["transactionHash"]).hex()))
    return results
