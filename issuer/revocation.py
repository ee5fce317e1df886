"""Revoke cards (leaked, fraudulent, recalled) on chain, then record it in the database.

Each revocation is a recorded act (``issuer.acts``, kind ``revoke``, payload: the card indices and the reason),
its transaction hash stored before broadcast. A rerun settles from the chain: a revocation mined after the
process died is recorded (with the reason the act holds); one the chain lost (a reorg, a rollback, a node
crash) is sent again, even though the database already says revoked.

A card revoked both in the database and on chain (or in a revoked batch) is refused (``CardRevoked``) before
anything is sent; or, with ``repeat_ok`` (``cardproof revoke``: a repeated command behaves like ``anchor``), reported
``already`` revoked (with the reason recorded first), nothing sent for it, and the others given with it revoked. A
card whose revocation a live process is sending now is refused either way.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from chain.errors import ChainError, ContractRevert, TransactionTimeout
from chain.registry import Registry, _gas_bitmap
from issuer import acts
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
    #: True: these cards were revoked already (``reason``: the one recorded then); nothing was sent for them.
    already: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def revoke_serials(sessions: sessionmaker[Session], registry: Registry, serials: list[str],
                   reason: RevokeReason, *, repeat_ok: bool = False) -> list[RevokeResult]:
    """Revoke cards by serial: one transaction per batch. Validates everything before sending anything.
    ``repeat_ok``: cards revoked already are results with ``already`` set, not a CardRevoked."""
    by_batch: dict[str, dict[int, str]] = defaultdict(dict)  # batch id -> card index -> display serial
    batch_pks: dict[str, int] = {}
    # (batch id, recorded reason) -> card index -> display serial, of cards revoked already
    already: dict[tuple[str, int], dict[int, str]] = defaultdict(dict)
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
            if batch.revoked:
                if not repeat_ok:
                    raise CardRevoked(serial, batch.revoke_reason)
                already[(batch.batch_id, int(batch.revoke_reason or 0))][card.index] = serial
                continue
            if card.revoked and registry.is_revoked(batch.batch_id_bytes, card.index):
                if not repeat_ok:
                    raise CardRevoked(serial, card.revoke_reason)
                already[(batch.batch_id, int(card.revoke_reason or 0))][card.index] = serial
                continue
            if card.revoked and _in_flight(session, batch.batch_id, card.index):
                raise CardRevoked(serial, card.revoke_reason)
            # Revoked in the database only: the chain lost it; it is sent again.
            by_batch[batch.batch_id][card.index] = serial
            batch_pks[batch.batch_id] = batch.id
    results = []
    for batch_id, entries in by_batch.items():
        indices = sorted(entries)
        settled = settle_revocations(sessions, registry, batch_id, resend=False)
        bid = bytes.fromhex(batch_id[2:])
        done = [i for i in indices if registry.is_revoked(bid, i)]
        tx_hash = next((settled[i] for i in indices if i in settled), "")
        if done:  # revoked on chain already (an earlier run that died after broadcasting): record it
            with sessions.begin() as session:
                repo.mark_cards_revoked(session, batch_pks[batch_id], done, int(reason))
        todo = [i for i in indices if i not in done]
        if todo:
            tx_hash = send_revocation(sessions, registry, batch_id, batch_pks[batch_id], todo, int(reason))
        results.append(RevokeResult(batch_id, [entries[i] for i in indices], indices, int(reason), tx_hash))
    for (batch_id, recorded), entries in already.items():
        indices = sorted(set(entries) - set(by_batch.get(batch_id, {})))
        if indices:
            results.append(RevokeResult(batch_id, [entries[i] for i in indices], indices, recorded, "", already=True))
    return results


def _in_flight(session: Session, batch_id: str, index: int) -> bool:
    """Whether a live process drives a revocation of this card now (its act leased)."""
    return any(acts.leased(a) and index in acts.payload_of(a).get("indices", [])
               for a in acts.open_acts(session, "revoke", batch_id))


def send_revocation(sessions: sessionmaker[Session], registry: Registry, batch_id: str, batch_pk: int,
                    indices: list[int], reason: int) -> str:
    """Revoke `indices` of a batch on chain as a recorded act; records the cards revoked with its receipt."""
    client = registry.client
    bid = bytes.fromhex(batch_id[2:])
    with sessions() as session:
        act = acts.begin(session, "revoke", batch_id, {"indices": sorted(indices), "reason": int(reason)},
                         client=client, contract=registry.address)
        session.commit()

        def record_hash(sent: Any) -> None:
            acts.signed(act, sent)
            session.commit()

        try:
            sent = client.send(registry.fn.revokeCards(bid, sorted(indices), int(reason)),
                               gas=_gas_bitmap(indices), before_broadcast=record_hash)
            acts.broadcast(act)
            session.commit()
            receipt = client.wait(sent.tx_hash)
        except ContractRevert as exc:
            session.rollback()
            acts.failed(act, exc)
            session.commit()
            raise
        except (TransactionTimeout, ChainError):
            session.rollback()  # the act keeps its hash: the next run or `cardproof reconcile` settles it
            if act.tx_hash and not client_knows(client, act.tx_hash):
                acts.lost(act, "not broadcast")
            acts.release(act)
            session.commit()
            raise
        repo.mark_cards_revoked(session, batch_pk, indices, int(reason))
        acts.mined(act, client, receipt)
        session.commit()
        return "0x" + bytes(receipt["transactionHash"]).hex()


def client_knows(client: Any, tx_hash: str) -> bool:
    try:
        return client.transaction_known(tx_hash)
    except ChainError:
        return True  # cannot tell: assume it may be out there


def settle_revocations(sessions: sessionmaker[Session], registry: Registry, batch_id: str, *,
                       resend: bool = True, wait: bool = True) -> dict[int, str]:
    """Settle this batch's open revoke acts from the chain: a mined one is recorded (cards revoked with the act's
    reason), one still in the mempool is awaited (`wait`), one the chain does not hold is lost, and sent again
    (`resend`) for the cards it still has to revoke. Acts a live process drives (leased) are left alone unless
    mined.
    Returns card index -> transaction hash of the revocations newly recorded in the database or sent again."""
    client = registry.client
    bid = bytes.fromhex(batch_id[2:])
    out: dict[int, str] = {}
    redo: list[tuple[list[int], int]] = []
    with sessions() as session:
        batch = repo.get_batch(session, batch_id)
        for act in acts.open_acts(session, "revoke", batch_id):
            payload = acts.payload_of(act)
            indices, reason = [int(i) for i in payload.get("indices", [])], int(payload.get("reason", 0))
            seen = acts.observe(client, act)
            if acts.leased(act) and seen.status != "mined":
                continue  # a live process drives it (a mined one is a fact: recorded whoever drives it)
            if seen.status == "in_mempool" and wait:
                try:
                    receipt = client.wait(act.tx_hash)
                    seen = acts.Seen("mined", receipt)
                except ContractRevert:
                    seen = acts.Seen("reverted")
            if seen.status == "in_mempool":
                acts.broadcast(act)
            elif seen.status == "mined":
                if repo.mark_cards_revoked(session, batch.id, indices, reason):
                    out.update({i: act.tx_hash for i in indices})
                acts.mined(act, client, seen.receipt)
            else:
                missing = [i for i in indices if not registry.is_revoked(bid, i)]
                if not missing:  # revoked on chain by another transaction
                    repo.mark_cards_revoked(session, batch.id, indices, reason)
                    acts.mined(act, client, None)
                elif seen.status == "reverted":
                    acts.failed(act, "the revocation transaction failed on chain")
                else:
                    acts.lost(act, "the chain does not hold the revocation")
                    acts.release(act)
                    redo.append((missing, reason))
            session.commit()
        batch_pk = batch.id
    if resend:
        for missing, reason in redo:
            tx = send_revocation(sessions, registry, batch_id, batch_pk, missing, reason)
            out.update({i: tx for i in missing})
    return out
