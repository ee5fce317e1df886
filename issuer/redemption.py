"""Redeem a card exactly once: check its code, claim it in the database, mark it on chain.

Exactly-once comes from one conditional UPDATE in the database (of concurrent callers, one wins, on
SQLite and PostgreSQL alike) and from the registry's bitmap on chain. The claim is taken first. If the
chain refuses before anything was broadcast (unreachable node, revoked card), the claim is released, so
the database never says redeemed when the chain does not. Once the transaction is signed, its hash
replaces the claim (``tx:0x...``, stored before broadcast): if waiting for it then fails, the claim stays,
and the next attempt settles it from the chain (redeemed there: kept; still pending: refused for now;
failed or dropped: released and redeemed anew).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

import chain.errors as chain_errors
from chain.registry import Registry
from issuer.core.serial import canonical_serial
from issuer.errors import AlreadyRedeemed, CardRevoked, InvalidBatchState, RedemptionPending, WrongCode
from issuer.lookup import code_matches
from issuer.secrets_store import MasterKey
from issuer.storage import repository as repo
from issuer.storage.models import Card


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


def _swap_claim(sessions: sessionmaker[Session], card_id: int, old: str, new: str | None) -> None:
    """Replace claim `old` on the card by `new` (None releases the card), only if `old` still holds it."""
    values: dict[str, Any] = {"redeemed_by": new} if new is not None else {"redeemed_by": None, "redeemed_at": None}
    with sessions.begin() as session:
        session.execute(update(Card).where(Card.id == card_id, Card.redeemed_by == old)
                        .values(**values).execution_options(synchronize_session=False))


def _release_claim(sessions: sessionmaker[Session], card_id: int, token: str) -> None:
    _swap_claim(sessions, card_id, token, None)


PENDING = "tx:"


def _settle_pending(sessions: sessionmaker[Session], registry: Registry, card_id: int, batch_id: bytes,
                    index: int, marker: str, serial: str) -> None:
    """Resolve a claim left by a redemption whose transaction was broadcast but not seen confirmed.
    Returns once the claim is released (the caller may redeem anew); raises otherwise."""
    tx_hash = marker[len(PENDING):]
    if registry.is_redeemed(batch_id, index):
        _swap_claim(sessions, card_id, marker, "chain")
        raise AlreadyRedeemed(serial)
    client = registry.client
    if client.get_receipt(tx_hash) is None and client.transaction_known(tx_hash):
        raise RedemptionPending(serial, tx_hash)
    _release_claim(sessions, card_id, marker)  # mined and failed, or dropped


def redeem_card(sessions: sessionmaker[Session], master_key: MasterKey, registry: Registry, serial_text: str,
                code: str, redeemed_by: str) -> RedeemResult:
    """Redeem card `serial_text` with its secret `code` on behalf of `redeemed_by`."""
    serial = canonical_serial(serial_text)
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
        if card.redeemed_at is not None:
            if not (card.redeemed_by or "").startswith(PENDING):
                raise AlreadyRedeemed(serial, card.redeemed_at.isoformat())
            marker = card.redeemed_by
            session.rollback()
            _settle_pending(sessions, registry, card_id, batch_id, index, marker, serial)
        token = f"claim:{secrets.token_hex(8)}"
        if not repo.mark_card_redeemed(session, card_id, token):
            session.rollback()
            raise AlreadyRedeemed(serial)
        session.commit()

    def record_hash(sent: Any) -> None:
        nonlocal token
        pending = PENDING + "0x" + bytes(sent.tx_hash).hex()
        _swap_claim(sessions, card_id, token, pending)
        token = pending

    try:
        receipt = registry.mark_redeemed(batch_id, [index], on_sent=record_hash)
    except chain_errors.CardAlreadyRedeemed:
        # Redeemed on chain by someone else (another system of the issuer): the claim stands.
        _swap_claim(sessions, card_id, token, "chain")
        raise AlreadyRedeemed(serial) from None
    except chain_errors.CardRevoked:
        _release_claim(sessions, card_id, token)
        with sessions.begin() as session:
            repo.mark_cards_revoked(session, repo.get_batch(session, batch_id).id, [index], 0)
        raise CardRevoked(serial) from None
    except BaseException:
        if not token.startswith(PENDING):  # nothing was broadcast: the card is free again
            _release_claim(sessions, card_id, token)
        raise

    now = dt.datetime.now(dt.UTC)
    _swap_claim(sessions, card_id, token, redeemed_by)
    return RedeemResult(
        serial=serial, batch_id="0x" + batch_id.hex(), index=index, redeemed_at=now.isoformat(),
        redeemed_by=redeemed_by, tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
        block_number=int(receipt["blockNumber"]),
    )
