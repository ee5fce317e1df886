"""Redeem a card exactly once: check its code, claim it in the database, mark it on chain.

Exactly-once comes from one conditional UPDATE in the database (of concurrent callers, one wins, on
SQLite and PostgreSQL alike) and from the registry's bitmap on chain. The claim is taken first. If the
chain refuses before anything was broadcast (unreachable node, revoked card), the claim is released, so
the database never says redeemed when the chain does not. Once the transaction is signed, its hash
replaces the claim (``tx:0x...``, stored before broadcast, together with a recorded act of kind ``redeem``,
``issuer.acts``): if waiting for it then fails, the claim stays, and the next attempt settles it from the
chain (redeemed there: kept, for the redeemer the act recorded; still pending: refused for now; failed or
dropped: released and redeemed anew).

A claim is settled by another caller only when nobody drives it any more: the act's lease has expired or was
given back (a process that gives up waiting gives it back; a killed one's lease expires,
``CARDPROOF_ACT_LEASE``). A concurrent loser that finds the winner's in-flight claim waits a little for it to
settle, then answers already redeemed, or redemption pending; it never takes the claim over.

When the chain lost a redemption the database holds (a reorg, a rollback, a node crash), the next attempt
marks it on chain again for the recorded redeemer: that redeemer gets its result again, anybody else gets
``AlreadyRedeemed``.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

import chain.errors as chain_errors
from chain.registry import Registry, _gas_bitmap
from issuer import acts
from issuer.core.serial import canonical_serial
from issuer.errors import AlreadyRedeemed, CardRevoked, InvalidBatchState, RedemptionPending, WrongCode
from issuer.lookup import code_matches
from issuer.secrets_store import MasterKey
from issuer.storage import repository as repo
from issuer.storage.models import Card, utcnow

PENDING = "tx:"
CLAIM = "claim:"
#: How long a loser waits for a winner's in-flight claim to settle before answering "pending".
IN_FLIGHT_WAIT = 5.0


@dataclass(frozen=True)
class RedeemResult:
    serial: str
    batch_id: str
    index: int
    redeemed_at: str
    redeemed_by: str
    tx_hash: str
    block_number: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def is_claim(marker: str | None) -> bool:
    """A redemption in progress (``claim:`` before signing, ``tx:0x...`` once signed), not a final one."""
    return bool(marker) and marker.startswith((PENDING, CLAIM))  # type: ignore[union-attr]


def _swap_claim(sessions: sessionmaker[Session], card_id: int, old: str, new: str | None,
                act_update: Any = None) -> bool:
    """Replace claim `old` on the card by `new` (None releases the card), only if `old` still holds it.
    `act_update(session)` runs in the same transaction. True if the claim was swapped."""
    values: dict[str, Any] = {"redeemed_by": new} if new is not None else {"redeemed_by": None, "redeemed_at": None}
    with sessions.begin() as session:
        result = session.execute(update(Card).where(Card.id == card_id, Card.redeemed_by == old)
                                 .values(**values).execution_options(synchronize_session=False))
        if act_update is not None:
            act_update(session)
        return result.rowcount == 1


def _release_claim(sessions: sessionmaker[Session], card_id: int, token: str, act_update: Any = None) -> None:
    _swap_claim(sessions, card_id, token, None, act_update)


def _act_of(session: Session, marker: str) -> Any:
    return acts.by_tx(session, marker[len(PENDING):]) if marker.startswith(PENDING) else None


def _unsigned_acts(session: Session, batch_id: bytes, index: int) -> list[Any]:
    """Open redeem acts of this card that never signed a transaction (their process died before): a bare claim's."""
    return [a for a in acts.open_acts(session, "redeem", "0x" + batch_id.hex())
            if a.tx_hash is None and acts.payload_of(a).get("index") == index and not acts.leased(a)]


def _in_flight(session: Session, marker: str, claimed_at: dt.datetime | None) -> bool:
    """Whether a live process may still be driving this claim."""
    if marker.startswith(PENDING):
        act = _act_of(session, marker)
        if act is not None:
            return acts.leased(act)
    # A bare claim (not signed yet), or a tx: claim of a database older than chain_acts: its age.
    return claimed_at is not None and claimed_at > utcnow() - dt.timedelta(seconds=acts.lease_seconds())


def _act_update(act_id: int | None, fn: Any) -> Any:
    if act_id is None:
        return None

    def run(session: Session) -> None:
        act = session.get(acts.ChainAct, act_id)
        if act is not None:
            fn(act)
    return run


def _settle_pending(sessions: sessionmaker[Session], registry: Registry, card_id: int, batch_id: bytes,
                    index: int, marker: str, serial: str) -> None:
    """Resolve a claim nobody drives any more (left by a crash, or given up). Returns once the claim is
    released (the caller may redeem anew); raises otherwise."""
    client = registry.client
    with sessions() as session:
        act = _act_of(session, marker)
        act_id = act.id if act is not None else None
        who = (acts.payload_of(act).get("redeemed_by") if act is not None else None) or "chain"
    if registry.is_redeemed(batch_id, index):
        receipt = client.get_receipt(marker[len(PENDING):]) if marker.startswith(PENDING) else None
        _swap_claim(sessions, card_id, marker, who,
                    _act_update(act_id, lambda a: acts.mined(a, client, receipt if receipt and receipt["status"] == 1
                                                                  else None)))
        raise AlreadyRedeemed(serial)
    if marker.startswith(PENDING):
        tx_hash = marker[len(PENDING):]
        if client.get_receipt(tx_hash) is None and client.transaction_known(tx_hash):
            raise RedemptionPending(serial, tx_hash)
    # mined and failed, or dropped, or never signed
    # The attempt ended without an effect on chain and the card is free again: its act is over (a new attempt is a
    # new act), not "lost" (an open state that a rerun or reconcile would try to redo).
    def over(session: Session) -> None:
        ended = [session.get(acts.ChainAct, act_id)] if act_id is not None else \
            _unsigned_acts(session, batch_id, index)
        for a in ended:
            if a is not None:
                acts.failed(a, "released: the chain does not hold it")

    _release_claim(sessions, card_id, marker, over)


def _wait_for_claim(sessions: sessionmaker[Session], card_id: int, marker: str) -> str | None:
    """Wait up to IN_FLIGHT_WAIT for another caller's claim to settle; the card's marker then."""
    deadline = time.monotonic() + IN_FLIGHT_WAIT
    current: str | None = marker
    while time.monotonic() < deadline:
        time.sleep(0.05)
        with sessions() as session:
            current = session.scalar(select(Card.redeemed_by).where(Card.id == card_id))
        if not is_claim(current):  # settled (redeemed) or released (None)
            return current
    return current


def redeem_card(sessions: sessionmaker[Session], master_key: MasterKey, registry: Registry, serial_text: str,
                code: str, redeemed_by: str) -> RedeemResult:
    """Redeem card `serial_text` with its secret `code` on behalf of `redeemed_by`. The code is read as typed by its
    batch's rule (``issuer.lookup.code_matches``): a generated code whatever its case, spaces and dashes."""
    serial = canonical_serial(serial_text)
    for _round in range(3):
        with sessions() as session:
            card = repo.get_card_by_serial(session, serial_text)
            batch = card.batch
            if batch.state != "anchored":
                raise InvalidBatchState(batch.batch_id, batch.state, "anchored",
                                        detail="cards can be redeemed once their batch is anchored")
            if not code_matches(master_key, card, code):
                raise WrongCode(serial)
            if card.revoked or batch.revoked:
                raise CardRevoked(serial, card.revoke_reason if card.revoked else batch.revoke_reason)
            card_id, index, batch_id = card.id, card.index, batch.batch_id_bytes
            marker, claimed_at = card.redeemed_by, card.redeemed_at
            if claimed_at is not None:
                if not is_claim(marker):
                    session.rollback()
                    return _redeemed_already(sessions, registry, card_id, batch_id, index, serial, marker,
                                             claimed_at, redeemed_by)
                in_flight = _in_flight(session, marker, claimed_at)
                session.rollback()
                if in_flight:  # another caller's redemption, in progress: never take it over
                    now = _wait_for_claim(sessions, card_id, marker)
                    if now is None:
                        continue  # released: try again
                    if not is_claim(now):
                        raise AlreadyRedeemed(serial)
                    if registry.is_redeemed(batch_id, index):
                        raise AlreadyRedeemed(serial)
                    raise RedemptionPending(serial, now[len(PENDING):] if now.startswith(PENDING) else None)
                _settle_pending(sessions, registry, card_id, batch_id, index, marker, serial)
            token = f"{CLAIM}{secrets.token_hex(8)}"
            if not repo.mark_card_redeemed(session, card_id, token):
                session.rollback()
                continue  # somebody claimed it meanwhile: look again
            session.commit()
        return _mark_on_chain(sessions, registry, card_id, batch_id, index, serial, token, redeemed_by)
    raise AlreadyRedeemed(serial)


def _mark_on_chain(sessions: sessionmaker[Session], registry: Registry, card_id: int, batch_id: bytes, index: int,
                   serial: str, token: str, redeemed_by: str, *, redo: bool = False) -> RedeemResult:
    """Send markRedeemed for a card this caller holds `token` on (or, `redo`, for a recorded redemption the
    chain lost: the card keeps its redeemer), recorded as an act."""
    client = registry.client
    bid = "0x" + batch_id.hex()
    with sessions.begin() as session:
        act = acts.begin(session, "redeem", bid, {"index": index, "serial": serial, "redeemed_by": redeemed_by},
                         client=client, contract=registry.address)
        act_id = act.id
    claim = token

    def record_hash(sent: Any) -> None:
        nonlocal claim
        pending = PENDING + "0x" + bytes(sent.tx_hash).hex()
        record_act = _act_update(act_id, lambda a: acts.signed(a, sent))
        if redo:
            with sessions.begin() as session:
                record_act(session)  # type: ignore[misc]
            return
        if not _swap_claim(sessions, card_id, claim, pending, record_act):
            raise AlreadyRedeemed(serial)  # our claim is gone (settled by someone else): send nothing
        claim = pending

    def finish_act(fn: Any) -> None:
        with sessions.begin() as session:
            _act_update(act_id, fn)(session)  # type: ignore[misc]

    try:
        sent = client.send(registry.fn.markRedeemed(batch_id, [index]), gas=_gas_bitmap([index]),
                           before_broadcast=record_hash)
        finish_act(acts.broadcast)
        receipt = client.wait(sent.tx_hash)
    except chain_errors.CardAlreadyRedeemed:
        # Redeemed on chain by someone else (another system of the issuer): the claim stands.
        finish_act(lambda a: acts.mined(a, client, None))
        if not redo:
            _swap_claim(sessions, card_id, claim, "chain")
        raise AlreadyRedeemed(serial) from None
    except chain_errors.CardRevoked:
        finish_act(lambda a: acts.failed(a, "the card is revoked on chain"))
        if not redo:
            _release_claim(sessions, card_id, claim)
        with sessions.begin() as session:
            repo.mark_cards_revoked(session, repo.get_batch(session, batch_id).id, [index], 0)
        raise CardRevoked(serial) from None
    except chain_errors.ContractRevert as exc:
        # Refused in simulation (nothing sent) or failed on chain: the chain does not hold it, the card is free.
        error = exc
        finish_act(lambda a: acts.failed(a, error))
        if not redo:
            _release_claim(sessions, card_id, claim)
        raise
    except Exception:
        if not redo and not claim.startswith(PENDING):  # nothing was signed: the card is free again
            _release_claim(sessions, card_id, claim, _act_update(act_id, lambda a: acts.failed(a, "not sent")))
        elif not redo and not client.transaction_known(claim[len(PENDING):]):
            # Signed, but the node does not know it (the broadcast failed): free again.
            _release_claim(sessions, card_id, claim,
                           _act_update(act_id, lambda a: acts.failed(a, "not broadcast")))
        else:  # broadcast: the claim stays; give the lease back so the next attempt settles it at once
            finish_act(acts.release)
        raise

    finish_act(lambda a: acts.mined(a, client, receipt))
    now = dt.datetime.now(dt.UTC)
    if not redo:
        _swap_claim(sessions, card_id, claim, redeemed_by)
    return RedeemResult(
        serial=serial, batch_id=bid, index=index, redeemed_at=now.isoformat(),
        redeemed_by=redeemed_by, tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
        block_number=int(receipt["blockNumber"]),
    )


def _redeemed_already(sessions: sessionmaker[Session], registry: Registry, card_id: int, batch_id: bytes,
                      index: int, serial: str, marker: str | None, redeemed_at: dt.datetime,
                      redeemed_by: str) -> RedeemResult:
    """The database holds a finished redemption. If the chain lost it (reorg, rollback, node crash), mark it
    again; the recorded redeemer gets its result, anybody else AlreadyRedeemed."""
    try:
        on_chain = registry.is_redeemed(batch_id, index)
    except chain_errors.ChainError:
        on_chain = True  # cannot tell now: the database's answer stands; `cardproof reconcile` checks later
    if on_chain:
        raise AlreadyRedeemed(serial, redeemed_at.isoformat())
    result = redo_redemption(sessions, registry, card_id, batch_id, index, serial, marker or "chain")
    if marker != redeemed_by:
        raise AlreadyRedeemed(serial, redeemed_at.isoformat())
    return result


def redo_redemption(sessions: sessionmaker[Session], registry: Registry, card_id: int, batch_id: bytes, index: int,
                    serial: str, redeemed_by: str) -> RedeemResult:
    """Mark on chain again a redemption the database holds but the chain lost."""
    return _mark_on_chain(sessions, registry, card_id, batch_id, index, serial, "", redeemed_by, redo=True)
