"""Revoke cards (leaked, fraudulent, recalled) on chain, then record it in the database."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from chain.registry import Registry
from issuer.anchoring import NotBatchIssuer
from issuer.core.serial import format_serial
from issuer.errors import IssuerError
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
    by_batch: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with sessions() as session:
        for text in serials:
            card = repo.get_card_by_serial(session, text)
            batch = card.batch
            if batch.state != "anchored":
                from issuer.errors import InvalidBatchState

                raise InvalidBatchState(batch.batch_id, batch.state, "anchored",
                                        detail="only cards of anchored batches can be revoked")
            if repo.checksum_address(batch.issuer_address) != registry.client.address:
                raise NotBatchIssuer(f"card {format_serial_safe(card.serial)} belongs to issuer "
                                     f"{batch.issuer_address}, not {registry.client.address}")
            if card.revoked or batch.revoked:
                from issuer.errors import CardRevoked

                raise CardRevoked(format_serial_safe(card.serial),
                                  card.revoke_reason if card.revoked else batch.revoke_reason)
            entry = (card.index, format_serial_safe(card.serial))
            if entry not in by_batch[batch.batch_id]:
                by_batch[batch.batch_id].append(entry)
    results = []
    for batch_id, entries in by_batch.items():
        indices = sorted(i for i, _ in entries)
        receipt = registry.revoke_cards(bytes.fromhex(batch_id[2:]), indices, int(reason))
        with sessions.begin() as session:
            repo.mark_cards_revoked(session, repo.get_batch(session, batch_id).id, indices, int(reason))
        results.append(RevokeResult(batch_id, [s for _, s in sorted(entries)], indices, int(reason),
                                    "0x" + bytes(receipt["transactionHash"]).hex()))
    return results


def format_serial_safe(db_serial: str) -> str:
    from issuer.core.serial import parse_serial

    return format_serial(parse_serial(db_serial))
